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
    "width": 800,
    "height": 800,
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
    ``(y[row], x[col])``, so the figure is given ``loss.T``.

    Args:
        surface: the grid to draw.
        trajectory: an optional path in the same plane coordinates.
        critical_points: points from ``critical_points``, marked at their loss.
        log_color: colour by ``log10(loss)``; heights stay the loss.
        **style: overrides of ``ARTICLE_STYLE`` (the article's look): ``title``,
            ``template``, ``width``, ``height`` (pixels), ``aspectratio``,
            ``line_color``, ``line_width``, ``marker_color``, ``marker_size``,
            ``colorscale``, ``showgrid``.

    >>> from fastsurface import ANN, piecewise_dataset, axis, loss_surface
    >>> s = loss_surface(ANN(1, 1, 1), piecewise_dataset(100), axis(-1, 1, 0.5), axis(0, 1, 0.5))
    >>> plot_surface(s).layout.scene.xaxis.title.text
    'w1'
    """
    check_drawable(surface, trajectory)
    unknown = set(style) - set(ARTICLE_STYLE)
    if unknown:
        raise FastsurfaceError(f"`style` accepts {', '.join(sorted(ARTICLE_STYLE))}; got unknown {sorted(unknown)}")
    look = {**ARTICLE_STYLE, **style}
    colour, bar = loss_colouring(surface.loss, log_color)
    figure = go.Figure(
        go.Surface(
            x=surface.w1,
            y=surface.w2,
            z=surface.loss.T,
            surfacecolor=colour.T,
            colorbar=bar,
            colorscale=look["colorscale"],
            name="loss",
            hovertemplate=f"{surface.labels[0]}=%{{x:.4g}}<br>{surface.labels[1]}=%{{y:.4g}}<br>loss=%{{z:.6g}}<extra></extra>",
        )
    )
    if trajectory is not None:
        figure.add_trace(_path_trace(trajectory, look))
    figure.add_traces(critical_traces(critical_points or [], three_d=True))
    axis_style = {"showgrid": look["showgrid"]}
    figure.update_layout(
        title=look["title"],
        template=look["template"],
        width=look["width"],
        height=look["height"],
        scene={
            "xaxis": {"title": {"text": surface.labels[0]}, **axis_style},
            "yaxis": {"title": {"text": surface.labels[1]}, **axis_style},
            "zaxis": {"title": {"text": "Loss"}, **axis_style},
            "aspectmode": "manual",
            "aspectratio": look["aspectratio"],
        },
    )
    return figure


def _path_trace(trajectory: Trajectory, look: dict[str, Any]) -> go.Scatter3d:
    return go.Scatter3d(
        x=trajectory.w1,
        y=trajectory.w2,
        z=trajectory.loss,
        mode="lines+markers",
        name=f"SGD ({trajectory.record})",
        line={"color": look["line_color"], "width": look["line_width"]},
        marker={"size": look["marker_size"], "color": look["marker_color"]},
        customdata=np.asarray(trajectory.step),
        hovertemplate="step %{customdata}<br>%{x:.4g}, %{y:.4g}<br>loss=%{z:.6g}<extra></extra>",
    )
