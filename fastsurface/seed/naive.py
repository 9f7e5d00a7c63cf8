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

from fastsurface._support.choices import Reduction
from fastsurface._support.copying import private_copy
from fastsurface.engine._losses import PerSampleLoss
from fastsurface.engine._stream import is_pair, pair_tensors, to_device
from fastsurface.engine.axes import as_axis
from fastsurface.engine.evaluate import check_prediction_shape
from fastsurface.engine.options import EvalOptions
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane, check_model, check_plane, default_plane


def naive_loss_surface(
    model: nn.Module,
    data: tuple[object, object],
    w1: np.ndarray,
    w2: np.ndarray,
    *,
    plane: Plane | None = None,
    loss: str | PerSampleLoss = "mse",
    reduction: Reduction = "batch_mean",
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
    options = EvalOptions(loss, reduction, batch_size, "cpu", dtype)  # checks each of them
    dtype, cpu = options.compute_dtype, torch.device("cpu")
    check_model(model)
    if not is_pair(data):
        raise FastsurfaceError(f"`data` must be an (x, y) pair of arrays or tensors, got {type(data).__name__}")
    w1, w2 = as_axis("w1", w1), as_axis("w2", w2)
    plane = default_plane(model) if plane is None else plane
    check_plane(model, plane)
    plane = plane.to(cpu, dtype)
    model = private_copy(model).to(dtype).eval()
    parameters = dict(model.named_parameters())
    x, y = (to_device(part, cpu, dtype) for part in pair_tensors(data))
    check_prediction_shape(model, plane, options.objective, x, y)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    per_sample = options.objective.per_sample
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
