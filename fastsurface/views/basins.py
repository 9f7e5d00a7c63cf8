"""The basin map view: where an optimiser started from each grid point ends up.

The map is a heatmap over the start grid (first coordinate on x, second on y): by
default one colour per attractor (the largest ``ATTRACTOR_COLOURS`` basins; smaller ones
share grey, diverged starts are black), or a continuous colour by final loss or by
settling step. On top: a magenta shade over the starts whose fate disagrees with their
geometric basin, the surface's contour lines, the watershed's basin boundaries (cyan),
the attractors (stars), a few sample paths and the critical points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from fastsurface._support.choices import COLOURINGS
from fastsurface._support.memory import check_figure_fits
from fastsurface.errors import FastsurfaceError, check_bool, check_choice, check_positive_int
from fastsurface.results import BasinMap, CriticalPoint, Surface, Trajectories, Watershed
from fastsurface.views.planar import check_critical_points, critical_traces, loss_colouring

_PALETTE = plotly.colors.qualitative.Plotly
# Attractors with a colour of their own, largest first; the rest share OTHER.
ATTRACTOR_COLOURS = len(_PALETTE)
OTHER, DIVERGED, DISAGREEMENT = "#8c8c8c", "#000000", "#ff00ff"
# No width or height: the figure sizes itself to its container (written to HTML, the window).
_FIGURE = {"template": "plotly_dark"}


def plot_basins(
    basins: BasinMap,
    surface: Surface | None = None,
    *,
    color: str = "attractor",
    log_color: bool = False,
    paths: Trajectories | None = None,
    samples: int = 8,
    critical_points: Sequence[CriticalPoint] | None = None,
    watershed: Watershed | None = None,
    disagreement: np.ndarray | None = None,
    title: str | None = None,
) -> go.Figure:
    """The basin map of ``basins``, with whatever context is given drawn over it.

    Args:
        basins: from ``basin_map``.
        surface: draws the loss's contour lines (white) over the map.
        color: ``"attractor"`` (categorical), ``"loss"`` (final loss) or ``"time"``
            (settling step, ``BasinMap.converge_step``).
        log_color: with ``color="loss"``, colour by ``log10`` of the final loss.
        paths: the runs of the map (``train_many``); ``samples`` of them, spread evenly
            over the grid, are drawn as lines.
        samples: how many sample paths to draw.
        critical_points: marked by kind, as in ``plot_contour``.
        watershed: its basin boundaries are drawn (a ``Watershed`` on the same grid).
        disagreement: a boolean map ``(n1, n2)`` (``basin_disagreement``): starts whose
            fate differs from their geometric basin's, shaded magenta.
        title: figure title; by default the optimiser and the number of runs.

    >>> import numpy as np, fastsurface as fs
    >>> data = fs.piecewise_dataset(256)
    >>> runs = fs.train_many(fs.ANN(1, 1, 1), data, data, grid=(fs.axis(-2, 2, 1.0), fs.axis(-2, 2, 1.0)), epochs=2)
    >>> figure = plot_basins(fs.basin_map(runs), paths=runs, samples=2)
    >>> [trace.name for trace in figure.data][:3], figure.data[0].z.shape
    (['fate', 'attractors', 'sample paths'], (4, 4))
    """
    if not isinstance(basins, BasinMap):
        raise FastsurfaceError(f"`basins` must be a fastsurface BasinMap (basin_map), got {type(basins).__name__}")
    check_choice("color", color, COLOURINGS)
    check_positive_int("samples", samples)
    check_bool("log_color", log_color)
    check_critical_points(critical_points)
    for name, value, kind in (
        ("surface", surface, Surface),
        ("paths", paths, Trajectories),
        ("watershed", watershed, Watershed),
    ):
        if value is not None and not isinstance(value, kind):
            raise FastsurfaceError(
                f"`{name}` must be a fastsurface {kind.__name__} or None, got {type(value).__name__}"
            )
    if title is not None and not isinstance(title, str):
        raise FastsurfaceError(f"`title` must be a string or None, got {type(title).__name__}")
    check_figure_fits(basins.attractor.size + (surface.loss.size if surface is not None else 0), "basins")
    figure = go.Figure(_map_trace(basins, color, log_color))
    if disagreement is not None:
        figure.add_trace(_disagreeing(basins, disagreement))
    if surface is not None:
        figure.add_trace(_contour_lines(surface))
    if watershed is not None:
        figure.add_trace(_boundaries(basins, watershed))
    figure.add_trace(_attractor_trace(basins))
    if paths is not None:
        figure.add_traces(_sample_paths(paths, samples))
    figure.add_traces(critical_traces(critical_points or [], three_d=False))
    runs = basins.attractor.size
    figure.update_layout(
        title=title or f"Basins of {basins.optimizer}: {runs:,} starts, {basins.steps:,} steps each",
        xaxis_title=basins.labels[0],
        yaxis_title=basins.labels[1],
        legend={"orientation": "h", "y": -0.1, "yanchor": "top"},
        **_FIGURE,
    )
    return figure


def _map_trace(basins: BasinMap, color: str, log_color: bool) -> go.Heatmap:
    first, second = basins.labels
    where = f"{first}=%{{x:.4g}}<br>{second}=%{{y:.4g}}<br>"
    common = {"x": basins.w1, "y": basins.w2, "name": "fate"}
    if color == "attractor":
        return _attractor_map(basins, where, common)
    if color == "loss":
        colour, bar = loss_colouring(np.where(basins.diverged, np.nan, basins.final_loss), log_color, "final loss")
        return go.Heatmap(
            z=colour.T,
            customdata=basins.final_loss.T,
            colorbar=bar,
            hovertemplate=where + "final loss %{customdata:.6g}<extra></extra>",
            **common,
        )
    steps = np.where(basins.diverged, np.nan, basins.converge_step.astype(np.float64))
    return go.Heatmap(
        z=steps.T,
        colorbar={"title": {"text": f"settled by step (within {basins.tolerance:.3g})"}},
        hovertemplate=where + "settled by step %{z:.0f}<extra></extra>",
        **common,
    )


def _attractor_map(basins: BasinMap, where: str, common: dict[str, Any]) -> go.Heatmap:
    """Categorical colours: codes 0 (diverged), 1 (a small basin), 2 ... (the largest)."""
    shown = min(len(basins.sizes), ATTRACTOR_COLOURS)
    code = np.where(basins.diverged, 0, np.where(basins.attractor < shown, basins.attractor + 2, 1))
    colours = [DIVERGED, OTHER, *(_PALETTE[i] for i in range(shown))]
    scale = []
    for index, colour in enumerate(colours):  # one flat band per code
        scale += [[index / len(colours), colour], [(index + 1) / len(colours), colour]]
    names = np.array(["diverged", "smaller attractor", *(f"attractor {i}" for i in range(shown))])
    return go.Heatmap(
        z=code.T,
        zmin=-0.5,
        zmax=len(colours) - 0.5,
        colorscale=scale,
        colorbar={
            "title": {"text": "fate"},
            "tickvals": list(range(len(colours))),
            "ticktext": names.tolist(),
        },
        customdata=np.stack([names[code], basins.final_loss, basins.converge_step], axis=-1).transpose(1, 0, 2),
        hovertemplate=where + "%{customdata[0]}<br>final loss %{customdata[1]:.6g}<br>"
        "settled by step %{customdata[2]}<extra></extra>",
        **common,
    )


def _contour_lines(surface: Surface) -> go.Contour:
    if not isinstance(surface, Surface):
        raise FastsurfaceError(f"`surface` must be a fastsurface Surface, got {type(surface).__name__}")
    return go.Contour(
        x=surface.w1,
        y=surface.w2,
        z=surface.loss.T,
        contours={"coloring": "lines"},
        line={"width": 1},
        colorscale=[[0, "white"], [1, "white"]],
        showscale=False,
        name="loss contours",
        hovertemplate="loss %{z:.6g}<extra></extra>",
    )


def _attractor_trace(basins: BasinMap) -> go.Scatter:
    shown = min(len(basins.sizes), ATTRACTOR_COLOURS)
    return go.Scatter(
        x=basins.attractors[:shown, 0],
        y=basins.attractors[:shown, 1],
        mode="markers+text",
        name="attractors",
        text=[str(i) for i in range(shown)],
        textposition="top center",
        marker={
            "symbol": "star",
            "size": 14,
            "color": [_PALETTE[i] for i in range(shown)],
            "line": {"width": 1, "color": "white"},
        },
        customdata=basins.sizes[:shown],
        hovertemplate="attractor %{text}<br>%{x:.4g}, %{y:.4g}<br>%{customdata} starts<extra></extra>",
    )


def _sample_paths(paths: Trajectories, samples: int) -> list[go.Scatter]:
    if not isinstance(paths, Trajectories):
        raise FastsurfaceError(f"`paths` must be fastsurface Trajectories (train_many), got {type(paths).__name__}")
    chosen = np.unique(np.linspace(0, paths.count - 1, min(samples, paths.count)).round().astype(int))
    traces = []
    for number, run in enumerate(chosen):
        path = paths.trajectory(int(run))
        traces.append(
            go.Scatter(
                x=path.w1,
                y=path.w2,
                mode="lines+markers",
                name="sample paths",
                legendgroup="paths",
                showlegend=number == 0,
                line={"color": "white", "width": 1.5},
                marker={"size": 4, "color": "white"},
                customdata=path.step,
                hovertemplate="step %{customdata}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
            )
        )
    return traces


def _boundaries(basins: BasinMap, watershed: Watershed) -> go.Scatter:
    """Segments between neighbouring grid cells of different geometric basins."""
    if not isinstance(watershed, Watershed) or watershed.basin.shape != basins.attractor.shape:
        raise FastsurfaceError("`watershed` must be a Watershed of a surface on the basin map's grid")
    w1, w2, label = basins.w1, basins.w2, watershed.basin
    x_edges, y_edges = _cell_edges(w1), _cell_edges(w2)
    xs: list[float | None] = []
    ys: list[float | None] = []
    for i, j in np.argwhere(label[1:, :] != label[:-1, :]):  # neighbours along w1: a vertical segment
        xs += [x_edges[i + 1], x_edges[i + 1], None]
        ys += [y_edges[j], y_edges[j + 1], None]
    for i, j in np.argwhere(label[:, 1:] != label[:, :-1]):  # along w2: a horizontal one
        xs += [x_edges[i], x_edges[i + 1], None]
        ys += [y_edges[j + 1], y_edges[j + 1], None]
    return go.Scatter(
        x=xs, y=ys, mode="lines", name="watershed boundaries", line={"color": "cyan", "width": 2}, hoverinfo="skip"
    )


def _cell_edges(values: np.ndarray) -> np.ndarray:
    """Edges of the cells around each grid value (midpoints; half a step beyond the ends)."""
    middle = (values[1:] + values[:-1]) / 2 if len(values) > 1 else np.zeros(0)
    first = values[0] - (middle[0] - values[0] if len(middle) else 0.5)
    last = values[-1] + (values[-1] - middle[-1] if len(middle) else 0.5)
    return np.concatenate([[first], middle, [last]])


def _disagreeing(basins: BasinMap, disagreement: np.ndarray) -> go.Heatmap:
    """A translucent layer over the starts that disagree (the rest transparent)."""
    mask = np.asarray(disagreement)
    if mask.shape != basins.attractor.shape or mask.dtype != bool:
        raise FastsurfaceError(
            f"`disagreement` must be a boolean map of the grid's shape {basins.attractor.shape}, got "
            f"{mask.dtype} of shape {mask.shape}"
        )
    return go.Heatmap(
        x=basins.w1,
        y=basins.w2,
        z=np.where(mask, 1.0, np.nan).T,
        colorscale=[[0, DISAGREEMENT], [1, DISAGREEMENT]],
        opacity=0.45,
        showscale=False,
        showlegend=True,
        name="fate differs from its watershed basin's",
        hovertemplate="%{x:.4g}, %{y:.4g}: not where most of its watershed basin goes<extra></extra>",
    )
