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
from fastsurface.analysis.critical import check_same_data, check_surface, surface_options
from fastsurface.engine._losses import PerSampleLoss
from fastsurface.engine._tiles import check_fits
from fastsurface.engine.axes import axis
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
        model, data, plane, batch_size, device, memory_budget, progress: as in
            ``loss_surface`` (the same model, data and plane as ``surface``).
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
