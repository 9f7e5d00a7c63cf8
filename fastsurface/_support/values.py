"""Turning the numbers a user passes (sequences, arrays, tensors on any device) into arrays."""

from __future__ import annotations

import numpy as np
import torch

from fastsurface.errors import FastsurfaceError


def real_values(name: str, values: object, rule: str) -> np.ndarray:
    """``values`` (a sequence, array or tensor on any device) as a new float64 array;
    complex, boolean and non-numeric values are refused naming ``name`` and ``rule``
    rather than cast (a cast would drop an imaginary part without a word)."""
    raw = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
    try:
        kind = np.asarray(raw).dtype.kind
        if kind not in "fiuO":
            raise TypeError(f"dtype {np.asarray(raw).dtype}")
        return np.array(raw, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise FastsurfaceError(f"`{name}` must be {rule} (real numbers), got {values!r:.200}: {error}") from error
