"""Refinement: a finer grid inside a window, merged with the coarse surface.

The combined result is one ``Surface`` on a rectilinear grid whose axes are the
union of the coarse axes and the window's fine axes. Every one of its points is a
direct evaluation: points of the coarse grid keep their coarse values, and every
other point (the window, and the strips where a fine row or column crosses the
coarse grid) is evaluated by the engine. So it plots correctly with every view
(non-uniform axes are native to plotly) and needs no interpolation anywhere.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from fastsurface._support.choices import Reduction
from fastsurface._support.devices import DeviceLike, DTypeLike
from fastsurface._support.identity import describe_data
from fastsurface.analysis.critical import check_same_data, check_surface, surface_options
from fastsurface.engine._losses import PerSampleLoss
from fastsurface.engine._tiles import check_fits
from fastsurface.engine.axes import MAX_AXIS_VALUES, as_axis, axis
from fastsurface.engine.evaluate import point_losses
from fastsurface.engine.options import DEFAULT_BATCH_SIZE
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane
from fastsurface.results import CriticalPoint, Surface, Trajectory

Window = tuple[tuple[float, float], tuple[float, float]]
# A fine axis value this close to a coarse one, relative to the fine step, is the coarse one.
_SAME_VALUE = 1e-9


def window_around(center: tuple[float, float] | CriticalPoint, radius: float | tuple[float, float]) -> Window:
    """The window ``center ± radius`` on each coordinate.

    Args:
        center: ``(w1, w2)`` or a ``CriticalPoint``.
        radius: half-width, > 0; one number for both coordinates or ``(r1, r2)``.

    >>> window_around((0.5, -1.0), 0.25)
    ((0.25, 0.75), (-1.25, -0.75))
    """
    a, b = (center.w1, center.w2) if isinstance(center, CriticalPoint) else _point("center", center)
    r1, r2 = _pair("radius", radius)
    return (float(a - r1), float(a + r1)), (float(b - r2), float(b + r2))


def trajectory_window(trajectory: Trajectory, margin: float = 0.05) -> Window:
    """The bounding box of ``trajectory`` widened by ``margin`` times its span on each side
    (a coordinate that does not move gets ``margin`` itself as half-width)."""
    if not isinstance(trajectory, Trajectory):
        raise FastsurfaceError(f"`trajectory` must be a fastsurface.Trajectory, got {type(trajectory).__name__}")
    if not isinstance(margin, numbers.Real) or not 0 < margin < math.inf:
        raise FastsurfaceError(f"`margin` must be a finite number > 0, got {margin!r}")
    boxes = []
    for values in (trajectory.w1, trajectory.w2):
        low, high = float(values.min()), float(values.max())
        pad = margin * (high - low) if high > low else margin
        boxes.append((low - pad, high + pad))
    return boxes[0], boxes[1]


def fit_window(
    w1: np.ndarray, w2: np.ndarray, trajectory: Trajectory, step: float, margin: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """The axes ``w1`` and ``w2`` grown by whole steps until they cover ``trajectory``.

    An axis the path stays inside comes back as it is, so a window that holds the whole
    path (the article's ``[-2, 2)`` for a short run) is kept. An axis the path leaves
    keeps its values and gains ``first − k·step`` below or ``last + k·step`` above, to
    cover the path plus ``margin`` times the covered span on that side.

    Args:
        w1, w2: strictly increasing axis values, e.g. from ``axis``.
        trajectory: the path, in the same coordinates.
        step: the spacing of the added values, > 0.
        margin: share of the span added beyond the path, >= 0.

    Returns:
        The two axes, float64.

    >>> w1, w2 = np.array([-1.0, -2.5]), np.array([0.0, 0.5])  # a path leaving [-2, 2) along w1
    >>> path = Trajectory(w1, w2, np.zeros(2), np.arange(2), ("w1", "w2"), "mean", "epoch")
    >>> w1, w2 = fit_window(axis(-2, 2, 0.5), axis(-2, 2, 0.5), path, 0.5)
    >>> w1.tolist(), len(w2)
    ([-3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], 8)
    """
    if not isinstance(trajectory, Trajectory):
        raise FastsurfaceError(f"`trajectory` must be a fastsurface.Trajectory, got {type(trajectory).__name__}")
    if not isinstance(step, numbers.Real) or not 0 < step < math.inf:
        raise FastsurfaceError(f"`step` must be a finite number > 0, got {step!r}")
    if not isinstance(margin, numbers.Real) or not 0 <= margin < math.inf:
        raise FastsurfaceError(f"`margin` must be a finite number >= 0, got {margin!r}")
    axes = []
    given = (as_axis("w1", w1), as_axis("w2", w2))
    for label, values, path in zip(trajectory.labels, given, (trajectory.w1, trajectory.w2), strict=True):
        if not np.isfinite(path).all():
            raise FastsurfaceError(f"`trajectory` must be finite to fit a window to it; its {label} is not")
        axes.append(_grown(label, values, float(path.min()), float(path.max()), step, margin))
    return axes[0], axes[1]


def _grown(label: str, values: np.ndarray, low: float, high: float, step: float, margin: float) -> np.ndarray:
    """``values`` extended by whole steps to cover ``[low, high]`` plus the margin."""
    pad = margin * (max(values[-1], high) - min(values[0], low))
    below = math.ceil((values[0] - (low - pad)) / step) if low < values[0] else 0
    above = math.ceil((high + pad - values[-1]) / step) if high > values[-1] else 0
    if below + len(values) + above > MAX_AXIS_VALUES:
        raise FastsurfaceError(
            f"`trajectory` spans {label} in [{low:.3g}, {high:.3g}], which at a `step` of {step:g} takes more than "
            f"the {MAX_AXIS_VALUES:,} values an axis may hold; raise `step` or keep the window as it is"
        )
    lower = values[0] - step * np.arange(below, 0, -1, dtype=np.float64)
    upper = values[-1] + step * np.arange(1, above + 1, dtype=np.float64)
    return np.concatenate([lower, values, upper])


def refine(
    surface: Surface,
    model: nn.Module,
    data: object,
    window: Window,
    step: float | tuple[float, float],
    *,
    plane: Plane | None = None,
    loss: str | PerSampleLoss | None = None,
    reduction: Reduction | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: DeviceLike = "auto",
    dtype: DTypeLike | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
    train_mode: bool | None = None,
) -> Surface:
    """``surface`` with the grid ``axis(*window[0], step) × axis(*window[1], step)`` added.

    Args:
        surface: the coarse surface; its values are reused, never recomputed.
        model, data, batch_size, device, memory_budget, progress: as in
            ``loss_surface`` (the same model and data as ``surface``; a pair of data is
            checked against ``surface.data_description``).
        plane: the surface's own (``surface.plane``) by default; a model with two
            weights has a default plane for surfaces that carry none.
        window: ``((w1_start, w1_stop), (w2_start, w2_stop))``, stops excluded as in
            ``axis``; see ``window_around`` and ``trajectory_window``. It may reach
            beyond the coarse grid, which then grows to cover it.
        step: the fine step, > 0; one number or ``(step1, step2)``.
        loss, reduction: the surface's own by default (a callable loss must be passed
            again).
        dtype: the surface's compute dtype by default.
        train_mode: the surface's own by default.

    Raises:
        FastsurfaceError: for data or a batch size whose sample or batch count differs from
            the surface's (batches count for ``"batch_mean"`` and in training mode).

    Returns:
        A ``Surface`` whose axes are the sorted union of the coarse and fine axes;
        ``seconds`` adds the new evaluation's time to the coarse surface's.

    >>> from fastsurface import ANN, piecewise_dataset, loss_surface
    >>> data = piecewise_dataset(200)
    >>> coarse = loss_surface(ANN(1, 1, 1), data, axis(-2, 2, 1.0), axis(-2, 2, 1.0))
    >>> fine = refine(coarse, ANN(1, 1, 1), data, ((0, 1), (0, 1)), 0.25)
    >>> fine.w1.tolist()
    [-2.0, -1.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    """
    check_surface(surface)
    plane, options = surface_options(
        surface,
        model,
        plane,
        loss,
        reduction,
        batch_size=batch_size,
        device=device,
        dtype=surface.dtype if dtype is None else dtype,
        memory_budget=memory_budget,
        progress=progress,
        train_mode=surface.train_mode if train_mode is None else train_mode,
    )
    check_same_data(surface, data, batch_size)
    (w1_range, w2_range), (step1, step2) = _window(window), _pair("step", step)
    first, old_rows = _merged_axis(surface.w1, axis(*w1_range, step1), step1)
    second, old_columns = _merged_axis(surface.w2, axis(*w2_range, step2), step2)
    check_fits((len(first), len(second)), options.compute_device, options.budget, options.tile_points)
    known = np.zeros((len(first), len(second)), dtype=bool)
    known[np.ix_(old_rows, old_columns)] = True
    rows, columns = np.nonzero(~known)
    evaluation = point_losses(model, plane, data, np.stack([first[rows], second[columns]], axis=1), options)
    check_same_data(surface, data, batch_size, (evaluation.samples, evaluation.batches))
    combined = torch.empty(known.shape, dtype=torch.float64, device=evaluation.loss.device)
    combined[np.ix_(old_rows, old_columns)] = surface.loss_tensor.to(combined.device)
    combined[rows, columns] = evaluation.loss
    return Surface(
        w1=first,
        w2=second,
        loss_tensor=combined,
        labels=surface.labels,
        loss_name=surface.loss_name,
        reduction=options.reduction,
        device=str(evaluation.loss.device),
        dtype=str(options.compute_dtype).removeprefix("torch."),
        samples=evaluation.samples,
        batches=evaluation.batches,
        seconds=surface.seconds + evaluation.seconds,
        method=evaluation.method,
        tile_points=evaluation.tile_points,
        train_mode=options.train_mode,
        plane=plane,
        loss_function=None if isinstance(options.loss, str) else options.loss,
        data_description=surface.data_description if surface.data_description is not None else describe_data(data),
        metric=surface.metric,
        higher_is_better=surface.higher_is_better,
    )


def _merged_axis(coarse: np.ndarray, fine: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The sorted union of two axes, a fine value close to a coarse one counting as it.

    Returns:
        ``(values, coarse_index)``: the union, and where each coarse value sits in it.
    """
    nearest = np.abs(fine[:, None] - coarse[None, :]).min(axis=1)
    values = np.union1d(coarse, fine[nearest > _SAME_VALUE * step])
    return values, np.searchsorted(values, coarse)


def _window(window: Window) -> Window:
    try:
        (a0, a1), (b0, b1) = window
        bounds = tuple(float(v) for v in (a0, a1, b0, b1))
    except (TypeError, ValueError) as error:
        raise FastsurfaceError(
            f"`window` must be ((w1_start, w1_stop), (w2_start, w2_stop)), got {window!r}"
        ) from error
    if not all(math.isfinite(v) for v in bounds) or bounds[0] >= bounds[1] or bounds[2] >= bounds[3]:
        raise FastsurfaceError(f"`window` must hold finite ranges with start < stop, got {window!r}")
    return (bounds[0], bounds[1]), (bounds[2], bounds[3])


def _pair(name: str, value: float | tuple[float, float]) -> tuple[float, float]:
    """One positive number for both coordinates, or two."""
    values = (value, value) if isinstance(value, numbers.Real) else value
    if (
        not isinstance(values, (tuple, list))
        or len(values) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < math.inf for v in values)
    ):
        raise FastsurfaceError(f"`{name}` must be a finite number > 0 or a pair of them, got {value!r}")
    return float(values[0]), float(values[1])


def _point(name: str, value: object) -> tuple[float, float]:
    """Two finite coordinates ``(w1, w2)``."""
    if (
        not isinstance(value, (tuple, list, np.ndarray))
        or len(value) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise FastsurfaceError(f"`{name}` must be two finite coordinates (w1, w2) or a CriticalPoint, got {value!r}")
    return float(value[0]), float(value[1])
