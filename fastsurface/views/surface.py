"""The article's figure: the loss surface with the optimiser's path on top."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from fastsurface.errors import FastsurfaceError
from fastsurface.results import CriticalPoint, Surface, Trajectory
from fastsurface.views.planar import check_drawable, critical_traces, loss_colouring

ARTICLE_STYLE: dict[str, Any] = {
    "title": "Loss Surface",
    "template": "plotly_dark",
    "width": None,  # None: fill the browser window (or the notebook cell's width)
    "height": None,
    "aspectratio": {"x": 1, "y": 1, "z": 0.5},
    "line_color": "red",
    "line_width": 2,
    "marker_color": "yellow",
    "marker_size": 4,
    "colorscale": None,
    "showgrid": False,
}


def plot_surface(
    surface: Surface,
    trajectory: Trajectory | None = None,
    *,
    critical_points: Sequence[CriticalPoint] | None = None,
    log_color: bool = False,
    **style: Any,
) -> go.Figure:
    """A 3-D plotly figure of ``surface``, with ``trajectory`` as a line with markers.

    The x axis carries the first coordinate (``surface.w1``), the y axis the second,
    each labelled with its name. Plotly reads ``Surface(z=Z)`` as ``Z[row][col]`` at
    ``(y[row], x[col])``, so the figure is given ``loss.T``. Without a ``width`` and
    ``height`` the figure sizes itself to its container: written to HTML, it fills the
    browser window.

    Args:
        surface: the grid to draw.
        trajectory: an optional path in the same plane coordinates.
        critical_points: points from ``critical_points``, marked at their loss.
        log_color: colour by ``log10(loss)``; heights stay the loss.
        **style: overrides of ``ARTICLE_STYLE`` (the article's look): ``title``,
            ``template``, ``width``, ``height`` (pixels, or ``None`` to fill the
            container), ``aspectratio``, ``line_color``, ``line_width``, ``marker_color``,
            ``marker_size``, ``colorscale``, ``showgrid``.

    >>> from fastsurface import ANN, piecewise_dataset, axis, loss_surface
    >>> s = loss_surface(ANN(1, 1, 1), piecewise_dataset(100), axis(-1, 1, 0.5), axis(0, 1, 0.5))
    >>> plot_surface(s).layout.scene.xaxis.title.text
    'w1'
    """
    figure = surface_figure(surface, trajectory, critical_points=critical_points, log_color=log_color, **style)
    try:
        return go.Figure(figure)
    except ValueError as error:  # plotly's validators refuse a style value (a negative width, say)
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), "invalid value")
        raise FastsurfaceError(f"`style` holds a value plotly refuses: {reason}") from error


def surface_figure(
    surface: Surface,
    trajectory: Trajectory | None = None,
    *,
    critical_points: Sequence[CriticalPoint] | None = None,
    log_color: bool = False,
    **style: Any,
) -> dict[str, Any]:
    """``plot_surface``'s figure as plotly's plain figure data, ``{"data": [...], "layout": {...}}``
    with NumPy arrays, not validated: what ``write_figure`` writes without building plotly's
    objects (which costs a few tenths of a second). Arguments as in ``plot_surface``, which
    validates exactly this.

    >>> from fastsurface import ANN, piecewise_dataset, axis, loss_surface
    >>> s = loss_surface(ANN(1, 1, 1), piecewise_dataset(100), axis(-1, 1, 0.5), axis(0, 1, 0.5))
    >>> [trace["type"] for trace in surface_figure(s)["data"]]
    ['surface']
    """
    check_drawable(surface, trajectory, critical_points=critical_points, log_color=log_color)
    unknown = set(style) - set(ARTICLE_STYLE)
    if unknown:
        raise FastsurfaceError(f"`style` accepts {', '.join(sorted(ARTICLE_STYLE))}; got unknown {sorted(unknown)}")
    look = {**ARTICLE_STYLE, **style}
    colour, bar = loss_colouring(surface.loss, log_color, surface.metric)
    first, second = surface.labels
    loss = {
        "type": "surface",
        "x": surface.w1,
        "y": surface.w2,
        "z": surface.loss.T,
        "colorbar": bar,
        "name": surface.metric,
        "hovertemplate": f"{first}=%{{x:.4g}}<br>{second}=%{{y:.4g}}<br>{surface.metric}=%{{z:.6g}}<extra></extra>",
    }
    path = [] if trajectory is None else [_path_trace(trajectory, look)]
    axis_style = {"showgrid": look["showgrid"]}
    layout: dict[str, Any] = {
        "title": {"text": look["title"]},
        "scene": {
            "xaxis": {"title": {"text": first}, **axis_style},
            "yaxis": {"title": {"text": second}, **axis_style},
            "zaxis": {"title": {"text": surface.metric[:1].upper() + surface.metric[1:]}, **axis_style},
            "aspectmode": "manual",
            "aspectratio": look["aspectratio"],
        },
    }
    if log_color:  # else plotly colours by z, the loss, and the file need not hold it twice
        loss["surfacecolor"] = colour.T
    if look["colorscale"] is not None:  # None: the template's
        loss["colorscale"] = look["colorscale"]
    layout.update({name: look[name] for name in ("template", "width", "height") if look[name] is not None})
    return {"data": [loss, *path, *critical_traces(critical_points or [], three_d=True)], "layout": layout}


def _path_trace(trajectory: Trajectory, look: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "scatter3d",
        "x": trajectory.w1,
        "y": trajectory.w2,
        "z": trajectory.loss,
        "mode": "lines+markers",
        "name": f"SGD ({trajectory.record})",
        "line": {"color": look["line_color"], "width": look["line_width"]},
        "marker": {"size": look["marker_size"], "color": look["marker_color"]},
        "customdata": np.asarray(trajectory.step),
        "hovertemplate": "step %{customdata}<br>%{x:.4g}, %{y:.4g}<br>loss=%{z:.6g}<extra></extra>",
    }
