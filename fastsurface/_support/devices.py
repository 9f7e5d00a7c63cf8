"""Turning the user's `device` and `dtype` arguments into torch objects."""

from __future__ import annotations

import numpy as np
import torch

from fastsurface.errors import FastsurfaceError

DeviceLike = str | torch.device
DTypeLike = str | torch.dtype

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: DeviceLike = "auto") -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device.

    Raises:
        FastsurfaceError: for any other value, or CUDA asked for where there is none.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise FastsurfaceError(
            f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
        ) from error
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise FastsurfaceError(f"`device` must be a CPU or CUDA device, got {device!r}")
    if not torch.cuda.is_available():
        raise FastsurfaceError(f"`device` is {device!r} but CUDA is not available on this machine")
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise FastsurfaceError(
            f"`device` is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return resolved


def resolve_dtype(dtype: DTypeLike = torch.float32) -> torch.dtype:
    """``torch.float32`` / ``torch.float64`` or their names ``"float32"`` / ``"float64"``."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise FastsurfaceError(f"`dtype` must be one of 'float32', 'float64' (or the torch dtypes), got {dtype!r}")


def check_representable(name: str, values: np.ndarray | torch.Tensor, dtype: torch.dtype) -> None:
    """Refuse finite values that the compute ``dtype`` cannot hold (they would become inf,
    then NaN losses): float64 data or coordinates beyond float32's range, say."""
    tensor = torch.as_tensor(values)  # a NumPy array's memory is shared, not copied
    limit = torch.finfo(dtype).max
    if tensor.numel() == 0 or not tensor.dtype.is_floating_point or torch.finfo(tensor.dtype).max <= limit:
        return
    low, high = (float(v) for v in tensor.aminmax())
    if max(-low, high) > limit:
        raise FastsurfaceError(
            f"`{name}` holds {max(-low, high):.4g}, beyond the range of the compute dtype "
            f"{str(dtype).removeprefix('torch.')} (largest {limit:.4g}); rescale it or compute in float64 (`dtype`)"
        )


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock reading covers the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
