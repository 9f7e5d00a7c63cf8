"""2-D views of a surface: contour or heatmap with paths and critical points, and an
animation of a path; plus the colouring and markers that the 3-D view shares.

Every view puts the first coordinate (``surface.w1``) on the x axis and the second
on the y axis. Plotly reads ``z[row][col]`` at ``(y[row], x[col])``, so the traces
are given ``loss.T``. No view fixes its size: it takes its container's (written to
HTML, the browser window; ``figure.update_layout(width=..., height=...)`` fixes one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from fastsurface._support.memory import check_figure_fits
from fastsurface.errors import FastsurfaceError, check_bool, check_choice
from fastsurface.results import CRITICAL_KINDS, CriticalPoint, Surface, Trajectory

TrajectoriesLike = Trajectory | Mapping[str, Trajectory] | Sequence[Trajectory] | None
CONTOUR_KINDS = ("contour", "heatmap")
# Marker symbol and colour of each kind of critical point, in 2-D and 3-D figures (symbols both accept).
KIND_MARKERS: dict[str, tuple[str, str]] = {
    "minimum": ("circle", "#00cc96"),
    "maximum": ("diamond", "#ef553b"),
    "saddle": ("x", "#ffa15a"),
    "degenerate": ("square", "#ab63fa"),
}
# The article's path colours for a single path; plotly's qualitative palette when several are overlaid.
_SINGLE_PATH = ("red", "yellow")
# Tick multipliers of a log colour bar, per decade.
_LOG_TICKS = (1, 2, 5)
# No width or height: the figure sizes itself to its container (written to HTML, the window).
_FIGURE = {"template": "plotly_dark"}


def plot_contour(
    surface: Surface,
    trajectories: TrajectoriesLike = None,
    critical_points: Sequence[CriticalPoint] | None = None,
    *,
    kind: str = "contour",
    log_color: bool = False,
    title: str = "Loss surface",
) -> go.Figure:
    """A 2-D contour (or heatmap) of ``surface`` with paths and critical points on top.

    Args:
        surface: the grid to draw (uniform or refined).
        trajectories: one ``Trajectory``, several as a list (named "path 1", ...), or a
            mapping from legend names to trajectories (e.g. one per learning rate).
        critical_points: points from ``critical_points``, one legend entry per kind.
        kind: ``"contour"`` or ``"heatmap"``.
        log_color: colour by ``log10(loss)`` (for losses spanning orders of
            magnitude; the colour bar and hover still show the loss).
        title: figure title.

    >>> from fastsurface import ANN, piecewise_dataset, axis, loss_surface
    >>> s = loss_surface(ANN(1, 1, 1), piecewise_dataset(100), axis(-1, 1, 0.5), axis(0, 1, 0.5))
    >>> figure = plot_contour(s)
    >>> figure.layout.xaxis.title.text, figure.data[0].z.shape
    ('w1', (2, 4))
    """
    check_drawable(surface, critical_points=critical_points, log_color=log_color, title=title)
    figure = go.Figure(_surface_trace(surface, kind, log_color))
    for name, trajectory, (line, marker) in _named_paths(surface, trajectories):
        figure.add_trace(_path_trace(trajectory, name, line, marker))
    figure.add_traces(critical_traces(critical_points or [], three_d=False))
    return _laid_out(figure, surface, title)


def plot_animation(
    surface: Surface,
    trajectory: Trajectory,
    critical_points: Sequence[CriticalPoint] | None = None,
    *,
    kind: str = "contour",
    log_color: bool = False,
    max_frames: int = 200,
    frame_ms: int = 120,
    title: str = "Loss surface: optimiser path",
) -> go.Figure:
    """The path drawn step by step over a 2-D view, with play / pause and a step slider.

    Args:
        surface, critical_points, kind, log_color, title: as in ``plot_contour``.
        trajectory: the path to animate.
        max_frames: most frames; a longer path is shown at evenly spaced points
            (first and last always included).
        frame_ms: milliseconds per frame when playing.

    >>> from fastsurface import ANN, piecewise_dataset, axis, loss_surface, train_sgd
    >>> data = piecewise_dataset(100)
    >>> s = loss_surface(ANN(1, 1, 1), data, axis(-1, 1, 0.5), axis(-1, 1, 0.5))
    >>> figure = plot_animation(s, train_sgd(ANN(1, 1, 1), data, data, epochs=3))
    >>> len(figure.frames), [button.label for button in figure.layout.updatemenus[0].buttons]
    (4, ['Play', 'Pause'])
    """
    check_drawable(surface, critical_points=critical_points, log_color=log_color, title=title)
    if not isinstance(trajectory, Trajectory):
        raise FastsurfaceError(f"`trajectory` must be a fastsurface Trajectory, got {type(trajectory).__name__}")
    for name, value in (("max_frames", max_frames), ("frame_ms", frame_ms)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FastsurfaceError(f"`{name}` must be a positive integer, got {value!r}")
    ((_, path, (line, marker)),) = _named_paths(surface, trajectory)
    shown = np.unique(np.linspace(0, len(path.w1) - 1, min(max_frames, len(path.w1))).round().astype(int))
    figure = go.Figure(_surface_trace(surface, kind, log_color))
    figure.add_traces(critical_traces(critical_points or [], three_d=False))
    moving = [len(figure.data), len(figure.data) + 1]
    figure.add_traces(_frame_traces(path, shown[0], line, marker))
    figure.frames = [go.Frame(data=_frame_traces(path, k, line, marker), traces=moving, name=str(k)) for k in shown]
    _laid_out(figure, surface, title)
    figure.update_layout(
        xaxis_range=_span(surface.w1, path.w1),
        yaxis_range=_span(surface.w2, path.w2),
        updatemenus=[_play_pause(frame_ms)],
        sliders=[_step_slider(path, shown)],
    )
    return figure


def loss_colouring(loss: np.ndarray, log_color: bool, name: str = "loss") -> tuple[np.ndarray, dict[str, Any]]:
    """The values to colour ``loss`` by, and the matching colour bar titled ``name``.

    With ``log_color`` the values are ``log10(loss)`` and the colour bar's ticks are
    labelled with losses (1, 2, 5 times powers of ten). Zero losses (a perfect fit, an
    accuracy of 0) have no logarithm: they are coloured as the smallest positive loss,
    and the colour bar's title says so.

    Raises:
        FastsurfaceError: with ``log_color``, when a finite loss is negative or none is
            positive.
    """
    if not log_color:
        return loss, {"title": {"text": name}}
    finite = loss[np.isfinite(loss)]
    positive = finite[finite > 0]
    if finite.size and (finite.min() < 0 or not positive.size):
        raise FastsurfaceError(
            f"`log_color` needs losses >= 0 with at least one positive (zeros are drawn at the smallest positive), "
            f"got losses from {finite.min():g} to {finite.max():g}"
        )
    low, high = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    colour = np.log10(np.where(np.isfinite(loss), np.maximum(loss, low), np.nan))
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for m in _LOG_TICKS
        if low <= m * 10.0**e <= high
    ]
    title = f"{name} (log)" + (f"<br>zeros drawn at {low:.3g}" if positive.size < finite.size else "")
    bar = {"title": {"text": title}, "tickvals": np.log10(ticks).tolist(), "ticktext": [f"{t:g}" for t in ticks]}
    return colour, bar


def check_critical_points(critical_points: object) -> None:
    """Refuse what is neither ``None`` nor a list (or tuple) of ``CriticalPoint``."""
    if critical_points is not None and not (
        isinstance(critical_points, (list, tuple)) and all(isinstance(p, CriticalPoint) for p in critical_points)
    ):
        raise FastsurfaceError(
            f"`critical_points` must be a list of CriticalPoint (from critical_points), got {critical_points!r:.100}"
        )


def check_drawable(
    surface: object,
    trajectory: object = None,
    *,
    critical_points: object = None,
    log_color: object = False,
    title: object = "",
) -> None:
    """Refuse, before building a figure, what is no surface (or trajectory, or list of
    critical points), a grid with fewer than two values on an axis, one whose figure would
    not fit in memory, a ``log_color`` that is not a bool and a ``title`` that is not text."""
    check_bool("log_color", log_color)
    if not isinstance(title, str):
        raise FastsurfaceError(f"`title` must be a string, got {type(title).__name__}")
    check_critical_points(critical_points)
    if not isinstance(surface, Surface):
        raise FastsurfaceError(f"`surface` must be a fastsurface Surface, got {type(surface).__name__}")
    rows, columns = surface.loss_tensor.shape
    if min(rows, columns) < 2:
        raise FastsurfaceError(
            f"`surface` must have at least 2 values on each axis to draw, got a {rows} x {columns} grid"
        )
    check_figure_fits(rows * columns, "surface")
    if trajectory is not None and not isinstance(trajectory, Trajectory):
        raise FastsurfaceError(
            f"`trajectory` must be a fastsurface Trajectory or None, got {type(trajectory).__name__}"
        )


def critical_traces(points: Sequence[CriticalPoint], *, three_d: bool) -> list[dict[str, Any]]:
    """One marker trace per kind present in ``points``, named after the kind, as plain data."""
    traces = []
    for kind in CRITICAL_KINDS:
        chosen = [p for p in points if p.kind == kind]
        if not chosen:
            continue
        symbol, colour = KIND_MARKERS[kind]
        common = {
            "x": [p.w1 for p in chosen],
            "y": [p.w2 for p in chosen],
            "mode": "markers",
            "name": kind,
            "customdata": [[p.loss, *p.eigenvalues] for p in chosen],
            "hovertemplate": f"{kind}<br>%{{x:.6g}}, %{{y:.6g}}<br>loss=%{{customdata[0]:.6g}}<br>"
            "eigenvalues %{customdata[1]:.3g}, %{customdata[2]:.3g}<extra></extra>",
        }
        if three_d:
            marker = {"symbol": symbol, "color": colour, "size": 6}
            traces.append({"type": "scatter3d", "z": [p.loss for p in chosen], "marker": marker, **common})
        else:
            marker = {"symbol": symbol, "color": colour, "size": 12, "line": {"width": 1, "color": "white"}}
            traces.append({"type": "scatter", "marker": marker, **common})
    return traces


def _surface_trace(surface: Surface, kind: str, log_color: bool) -> go.Contour | go.Heatmap:
    check_choice("kind", kind, CONTOUR_KINDS)
    colour, bar = loss_colouring(surface.loss, log_color, surface.metric)
    trace = go.Contour if kind == "contour" else go.Heatmap
    first, second = surface.labels
    return trace(
        x=surface.w1,
        y=surface.w2,
        z=colour.T,
        customdata=surface.loss.T,
        colorbar=bar,
        name=surface.metric,
        hovertemplate=f"{first}=%{{x:.4g}}<br>{second}=%{{y:.4g}}<br>{surface.metric}=%{{customdata:.6g}}<extra></extra>",
    )


def _named_paths(surface: Surface, trajectories: TrajectoriesLike) -> list[tuple[str, Trajectory, tuple[str, str]]]:
    """``(legend name, trajectory, (line colour, marker colour))`` for each path given."""
    if trajectories is None:
        return []
    if isinstance(trajectories, Trajectory):
        named = {f"SGD ({trajectories.record})": trajectories}
    elif isinstance(trajectories, Mapping):
        named = dict(trajectories)
    elif isinstance(trajectories, Sequence) and not isinstance(trajectories, str):
        named = {f"path {i + 1}": t for i, t in enumerate(trajectories)}
    else:
        raise FastsurfaceError(
            f"`trajectories` must be a Trajectory, a list or a mapping of them, got {type(trajectories).__name__}"
        )
    for name, trajectory in named.items():
        if not isinstance(trajectory, Trajectory):
            raise FastsurfaceError(
                f"`trajectories` entry {name!r} must be a Trajectory, got {type(trajectory).__name__}"
            )
        if tuple(trajectory.labels) != tuple(surface.labels):
            raise FastsurfaceError(
                f"`trajectories` entry {name!r} runs in coordinates {trajectory.labels}, "
                f"the surface in {surface.labels}"
            )
    if len(named) == 1:
        return [(name, t, _SINGLE_PATH) for name, t in named.items()]
    from plotly.colors import qualitative  # only for overlays: its import costs ~10 ms

    colours = [qualitative.Plotly[i % len(qualitative.Plotly)] for i in range(len(named))]
    return [(name, t, (c, c)) for (name, t), c in zip(named.items(), colours, strict=True)]


def _path_trace(trajectory: Trajectory, name: str, line: str, marker: str) -> go.Scatter:
    return go.Scatter(
        x=trajectory.w1,
        y=trajectory.w2,
        mode="lines+markers",
        name=name,
        line={"color": line, "width": 2},
        marker={"color": marker, "size": 6},
        customdata=np.stack([trajectory.step, trajectory.loss], axis=1),
        hovertemplate=f"{name}<br>step %{{customdata[0]}}<br>%{{x:.4g}}, %{{y:.4g}}<br>"
        "loss=%{customdata[1]:.6g}<extra></extra>",
    )


def _frame_traces(path: Trajectory, k: int, line: str, marker: str) -> list[go.Scatter]:
    """The path up to point ``k``, and point ``k`` itself."""
    return [
        go.Scatter(
            x=path.w1[: k + 1],
            y=path.w2[: k + 1],
            mode="lines+markers",
            name="path",
            line={"color": line, "width": 2},
            marker={"color": marker, "size": 5},
        ),
        go.Scatter(
            x=path.w1[k : k + 1],
            y=path.w2[k : k + 1],
            mode="markers",
            name=f"step {path.step[k]}: loss {path.loss[k]:.6g}",
            marker={"color": marker, "size": 14, "line": {"width": 2, "color": line}},
        ),
    ]


def _play_pause(frame_ms: int) -> dict[str, Any]:
    play = {"frame": {"duration": frame_ms, "redraw": False}, "fromcurrent": True, "transition": {"duration": 0}}
    pause = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate", "transition": {"duration": 0}}
    return {
        "type": "buttons",
        "direction": "left",
        "x": 0.0,
        "y": -0.12,
        "xanchor": "left",
        "yanchor": "top",
        "buttons": [
            {"label": "Play", "method": "animate", "args": [None, play]},
            {"label": "Pause", "method": "animate", "args": [[None], pause]},
        ],
    }


def _step_slider(path: Trajectory, shown: np.ndarray) -> dict[str, Any]:
    jump = {"mode": "immediate", "frame": {"duration": 0, "redraw": False}, "transition": {"duration": 0}}
    return {
        "x": 0.15,
        "y": -0.08,
        "len": 0.85,
        "currentvalue": {"prefix": "step "},
        "steps": [{"label": str(path.step[k]), "method": "animate", "args": [[str(k)], jump]} for k in shown],
    }


def _span(grid: np.ndarray, path: np.ndarray) -> list[float]:
    """Axis range covering the grid and the path, so frames never rescale the axes."""
    low, high = min(grid.min(), path.min()), max(grid.max(), path.max())
    pad = 0.02 * (high - low or 1.0)
    return [float(low - pad), float(high + pad)]


def _laid_out(figure: go.Figure, surface: Surface, title: str) -> go.Figure:
    figure.update_layout(
        title=title,
        xaxis_title=surface.labels[0],
        yaxis_title=surface.labels[1],
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        **_FIGURE,
    )
    return figure
