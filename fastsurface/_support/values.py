"""Turning the numbers a user passes (sequences, arrays, tensors on any device) into arrays."""

from __future__ import annotations

import numpy as np
import torch

from fastsurface.errors import FastsurfaceError


def real_values(name: str, values: object, rule: str) -> np.ndarray:
    """``values`` (a sequence, array or tensor on any device) as a new float64 array;
    complex, boolean and non-numeric values are refused naming ``name`` and ``rule``
    rather than cast (a cast would drop an imaginary part without a word)."""
    if isinstance(values, torch.Tensor) and values.device.type == "meta":
        raise FastsurfaceError(f"`{name}` must be {rule}, got a tensor on the meta device (shapes without values)")
    if isinstance(values, torch.Tensor) and values.layout != torch.strided:
        raise FastsurfaceError(f"`{name}` must be {rule}, got a {values.layout} tensor; use .to_dense()")
    raw = _host_array(values) if isinstance(values, torch.Tensor) else values
    try:
        kind = np.asarray(raw).dtype.kind
        if kind not in "fiuO":
            raise TypeError(f"dtype {np.asarray(raw).dtype}")
        return np.array(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as error:
        raise FastsurfaceError(f"`{name}` must be {rule} (real numbers), got {values!r:.200}: {error}") from error


def _host_array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's values in numpy; real floating point as float64 (numpy has no bfloat16,
    and float64 holds every float type's values exactly)."""
    host = tensor.detach().cpu()
    return (host.double() if host.dtype.is_floating_point else host).numpy()
