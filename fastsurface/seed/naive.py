"""The article's double loop, kept as the slow, obvious reference.

Used by tests and benchmarks only, never by the engine. It differs from the
article in one place on purpose: targets are given the predictions' shape, so
``nn.MSELoss`` computes the per-sample squared error (README, "What the numbers mean").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastsurface._support.copying import private_copy
from fastsurface.engine._losses import PerSampleLoss, resolve_loss
from fastsurface.engine._stream import check_reduction, pair_tensors, to_device
from fastsurface.planes.plane import Plane, default_plane


def naive_loss_surface(
    model: nn.Module,
    data: tuple[object, object],
    w1: np.ndarray,
    w2: np.ndarray,
    *,
    plane: Plane | None = None,
    loss: str | PerSampleLoss = "mse",
    reduction: str = "batch_mean",
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Loss at every ``(w1[i], w2[j])``, one forward pass per batch per point, on CPU.

    Weights are written into a copy of the model point by point and the data are
    read through a ``DataLoader`` (``shuffle=False``), as in the article; each batch's
    per-sample losses are summed (``"mean"``) or averaged (``"batch_mean"``) with one
    ``.item()`` per batch.

    Returns:
        float64 array of shape ``(len(w1), len(w2))``.
    """
    check_reduction(reduction)
    cpu = torch.device("cpu")
    plane = (default_plane(model) if plane is None else plane).to(cpu, dtype)
    model = private_copy(model).to(dtype).eval()
    parameters = dict(model.named_parameters())
    x, y = pair_tensors(data)
    loader = DataLoader(TensorDataset(to_device(x, cpu, dtype), to_device(y, cpu, dtype)), batch_size=batch_size)
    per_sample = resolve_loss(loss).per_sample
    surface = np.zeros((len(w1), len(w2)))
    with torch.no_grad():
        for i, a in enumerate(w1):
            for j, b in enumerate(w2):
                for name, value in plane.params(torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)).items():
                    parameters[name].data = value
                total = 0.0
                for xb, yb in loader:
                    losses = per_sample(model(xb), yb)
                    total += (losses.mean() if reduction == "batch_mean" else losses.sum()).item()
                surface[i, j] = total / (len(loader) if reduction == "batch_mean" else len(x))
    return surface
