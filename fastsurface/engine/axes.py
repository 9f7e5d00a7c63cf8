"""Grid axes: ``np.arange`` semantics without end-point drift, and validation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fastsurface._support.values import real_values
from fastsurface.errors import FastsurfaceError

# A ratio (stop - start) / step this close to an integer k is taken as exactly k,
# so that float rounding of the operands cannot add a spurious point at `stop`.
_DRIFT_TOLERANCE = 1e-9
# More values than this on one axis is taken for a typo in `step` and refused before
# the array is allocated (a square grid of it would need 800 TB).
MAX_AXIS_VALUES = 10**7


def axis(start: float, stop: float, step: float) -> np.ndarray:
    """Evenly spaced values ``start, start + step, ...`` below ``stop`` (float64).

    Like ``np.arange(start, stop, step)``: ``stop`` is excluded, so
    ``axis(-2, 2, 0.05)`` has 80 values. Two guards against floating-point drift:
    the count is ``ceil((stop - start) / step)`` except when that ratio lies within
    a relative 1e-9 of an integer ``k``, where it is ``k`` (``np.arange(1, 1.3, 0.1)``
    would return a fourth value ``1.3000000000000003``; this returns three); and each
    value is ``start + i * step``, never a running sum.

    Args:
        start: first value.
        stop: exclusive upper end; must exceed ``start``.
        step: spacing, > 0.

    Returns:
        float64 array of shape ``(count,)``, strictly increasing.

    >>> axis(-2, 2, 0.05).shape
    (80,)
    >>> axis(1, 1.3, 0.1).round(12).tolist()
    [1.0, 1.1, 1.2]
    """
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if (
            not isinstance(value, (int, float, np.floating, np.integer))
            or isinstance(value, bool)
            or not _finite(value)
        ):
            raise FastsurfaceError(f"`{name}` must be a finite number within float64's range, got {value!r:.100}")
    if step <= 0:
        raise FastsurfaceError(f"`step` must be > 0, got {step!r}")
    if stop <= start:
        raise FastsurfaceError(f"`stop` must be greater than `start`, got start={start!r}, stop={stop!r}")
    ratio = (float(stop) - float(start)) / float(step)
    if math.isinf(ratio):  # the span passes float64's range, its halves do not
        ratio = float(stop) / float(step) - float(start) / float(step)
    if math.isinf(ratio):
        raise FastsurfaceError(
            f"`step` of {step!r} gives more than the {MAX_AXIS_VALUES:,} values an axis may hold "
            f"in [{start!r}, {stop!r})"
        )
    nearest = round(ratio)
    count = nearest if abs(ratio - nearest) <= _DRIFT_TOLERANCE * max(1.0, ratio) else math.ceil(ratio)
    if count > MAX_AXIS_VALUES:
        raise FastsurfaceError(
            f"`step` of {step!r} gives {count:,} values in [{start!r}, {stop!r}), more than the "
            f"{MAX_AXIS_VALUES:,} an axis may hold"
        )
    with np.errstate(over="ignore"):
        values = start + step * np.arange(count, dtype=np.float64)
    if not np.isfinite(values).all():  # i·step passes float64's range before start brings it back
        raise FastsurfaceError(
            f"`start`, `stop` and `step` give values start + i·step beyond float64's range, got start={start!r}, "
            f"stop={stop!r}, step={step!r}"
        )
    return values


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float64
        return False


def as_axis(name: str, values: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    """Validate explicit axis values: 1-D, non-empty, finite, strictly increasing.

    Returns:
        float64 array of shape ``(len(values),)``.
    """
    array = real_values(name, values, "a 1-D sequence of numbers")
    problem = axis_problem(array)
    if problem is not None:
        raise FastsurfaceError(f"`{name}` {problem}")
    return array


def axis_problem(values: np.ndarray) -> str | None:
    """What keeps ``values`` from being an axis of a grid, in words, or ``None``: it must be
    1-D, non-empty, finite and strictly increasing. The rule of axes given to a function and
    of every file format's axes (``runs.storage``, ``runs.interchange``), so that no format
    writes what another refuses."""
    if values.ndim != 1 or values.size == 0:
        return f"must be a non-empty 1-D array, got shape {values.shape}"
    if not np.isfinite(values).all():
        return f"must hold finite values only, got {values[~np.isfinite(values)][:3]}"
    if not (np.diff(values) > 0).all():
        return f"must be strictly increasing, got {_preview(values)}"
    return None


def _preview(array: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in array[:5])
    return f"[{shown}{', ...' if array.size > 5 else ''}] (length {array.size})"
