"""The article's double loop, kept as the slow, obvious reference.

Used by tests and benchmarks only, never by the engine. It differs from the
article in one place on purpose: targets are given the predictions' shape, so
``nn.MSELoss`` computes the per-sample squared error (SPEC §3).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastsurface.plane import Plane, default_plane
from fastsurface.stream import check_reduction, pair_tensors


def naive_loss_surface(
    model: nn.Module,
    data: tuple[object, object],
    w1: np.ndarray,
    w2: np.ndarray,
    *,
    plane: Plane | None = None,
    reduction: str = "batch_mean",
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Loss at every ``(w1[i], w2[j])``, one forward pass per batch per point, on CPU.

    Weights are written into a copy of the model point by point and the data are
    read through a ``DataLoader`` (``shuffle=False``), as in the article.

    Returns:
        float64 array of shape ``(len(w1), len(w2))``.
    """
    check_reduction(reduction)
    plane = (default_plane(model) if plane is None else plane).to(torch.device("cpu"), dtype)
    model = copy.deepcopy(model).to(dtype).eval()
    parameters = dict(model.named_parameters())
    x, y = pair_tensors(data)
    loader = DataLoader(TensorDataset(x.to(dtype), y.to(dtype)), batch_size=batch_size, shuffle=False)
    loss_fn = nn.MSELoss(reduction="mean" if reduction == "batch_mean" else "sum")
    per_sample = y[0].numel()
    loss = np.zeros((len(w1), len(w2)))
    with torch.no_grad():
        for i, a in enumerate(w1):
            for j, b in enumerate(w2):
                for name, value in plane.params(torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)).items():
                    parameters[name].data = value
                total = 0.0
                for xb, yb in loader:
                    total += loss_fn(model(xb), yb).item()
                loss[i, j] = total / len(loader) if reduction == "batch_mean" else total / (len(x) * per_sample)
    return loss
