"""``train_sgd``'s loop as it was before the fast routes: ``functional_call`` on the plane's
parameter dictionary at every step, autograd through the two coordinates, and
``torch.optim.SGD``. The fast routes must give its path to the compute dtype's rounding."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

import fastsurface as fs


def reference_sgd_path(
    model: nn.Module,
    train: object,
    plane: fs.Plane,
    *,
    lr: float,
    epochs: int,
    start: tuple[float, float],
    batch_size: int = 64,
    seed: int = 0,
    record: str = "epoch",
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The path's points, float64 ``(P, 2)``, and the steps taken before each, int64 ``(P,)``,
    for the mean squared error on ``train``: an ``(x, y)`` pair of arrays (shuffled by a
    generator seeded with ``seed``, a 1-D array read as a column) or a list of batches."""
    module = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    local_plane = plane.to(torch.device(device), dtype)
    coordinates = torch.tensor(start, dtype=dtype, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([coordinates], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    path, steps, taken = [coordinates.detach().clone()], [0], 0
    for _ in range(epochs):
        for x, y in _batches(train, batch_size, generator, dtype, device):
            optimizer.zero_grad()
            prediction = functional_call(module, local_plane.params(coordinates[0], coordinates[1]), (x,))
            (prediction - y).square().reshape(len(y), -1).mean(dim=1).mean().backward()
            optimizer.step()
            taken += 1
            if record == "step":
                path.append(coordinates.detach().clone())
                steps.append(taken)
        if record == "epoch":
            path.append(coordinates.detach().clone())
            steps.append(taken)
    return torch.stack(path).to(torch.float64).cpu().numpy(), np.asarray(steps, dtype=np.int64)


def _batches(train, batch_size, generator, dtype, device):
    if isinstance(train, list):
        return [(x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)) for x, y in train]
    x, y = (torch.as_tensor(part).to(device=device, dtype=dtype) for part in train)
    x, y = (part[:, None] if part.ndim == 1 else part for part in (x, y))
    order = torch.randperm(len(x), generator=generator).to(device)
    return [(x[order[i : i + batch_size]], y[order[i : i + batch_size]]) for i in range(0, len(x), batch_size)]
