"""Any model, any plane: the loss-landscapes drop-in against the package, and a CNN surface.

Run: ``python -m pytest benchmarks/test_any_model.py -s --benchmark-json=bench.json``.
"""

from __future__ import annotations

import copy
import time
from itertools import pairwise

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
import fastsurface.compat.loss_landscapes as drop_in
from fastsurface._support.devices import synchronize

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
STEPS = 41
SAMPLES = 2_000


def _mlp_case(device: str, widths: tuple[int, ...]):
    """A tanh MLP ``widths[0] -> ... -> widths[-1] -> 1`` and 2,000 regression samples on ``device``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, widths[0], generator=generator)
    y = torch.randn(SAMPLES, 1, generator=generator)
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for fan_in, fan_out in pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
    return model.to(device), x.to(device), y.to(device)


def _ends(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Two seeded perturbations of ``model``: the far corners of an interpolation plane."""
    generator = torch.Generator().manual_seed(2)
    ends = []
    for _ in range(2):
        end = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in end.parameters():
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(0.1 * noise.to(parameter.device))
        ends.append(end)
    return ends[0], ends[1]


def _plane(library: object, plane: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``library``'s 41 x 41 plane of the MSE: ``random_plane`` (seeded) or ``planar_interpolation``."""
    metric = library.metrics.Loss(nn.MSELoss(), x, y)
    torch.manual_seed(1)
    if plane == "random_plane":
        return library.random_plane(model, metric, steps=STEPS)
    return library.planar_interpolation(model, *_ends(model), metric, steps=STEPS)


# loss-landscapes 3.0.6 draws random directions on the CPU and subtracts them in place
# from the model's parameters, so by its source its random_plane cannot run on a CUDA
# model (not yet tried on one); its interpolation planes stay on the model's device.
# The small MLP is 10 -> 32 -> 32 -> 1; the 2 -> 8 -> 1 case shows a tiny model,
# where the package's fixed cost per point dominates.
SMALL_MLP = (10, 32, 32)
TINY_MLP = (2, 8)
MLP_CASES = [
    pytest.param("cpu", "random_plane", SMALL_MLP, id="cpu-random_plane-small"),
    pytest.param("cpu", "planar_interpolation", SMALL_MLP, id="cpu-planar_interpolation-small"),
    pytest.param("cpu", "random_plane", TINY_MLP, id="cpu-random_plane-tiny"),
    pytest.param(
        "cuda", "planar_interpolation", SMALL_MLP, marks=DEVICES[1].marks, id="cuda-planar_interpolation-small"
    ),
]


@pytest.mark.parametrize(("device", "plane", "widths"), MLP_CASES)
def test_drop_in_against_loss_landscapes(benchmark, device, plane, widths):
    package = pytest.importorskip("loss_landscapes")
    pytest.importorskip("loss_landscapes.metrics")
    model, x, y = _mlp_case(device, widths)
    synchronize(x.device)
    started = time.perf_counter()
    expected = _plane(package, plane, copy.deepcopy(model), x, y)
    synchronize(x.device)
    seconds = time.perf_counter() - started
    actual = benchmark.pedantic(_plane, args=(drop_in, plane, model, x, y), rounds=5, iterations=1, warmup_rounds=1)
    np.testing.assert_allclose(actual, expected, rtol=2e-5)
    ours = benchmark.stats.stats.median
    benchmark.extra_info.update(package_seconds=seconds, drop_in_seconds_median=ours, speedup=seconds / ours)
    print(
        f"\n41x41 {plane}, MLP {' -> '.join(map(str, widths))} -> 1, {SAMPLES} samples, {device}: "
        f"loss-landscapes {seconds:.2f} s, drop-in {ours * 1e3:.1f} ms, {seconds / ours:.1f}x"
    )


def _cnn_case(samples: int = 4_000):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 1, 12, 12, generator=generator)
    y = torch.randint(0, 10, (samples,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)
    )
    return model, x, y


@pytest.mark.parametrize("device", DEVICES)
def test_cnn_random_plane_51x51(benchmark, device):
    model, x, y = _cnn_case()
    plane = fs.random_plane(model, seed=0)
    grid = np.linspace(-1, 1, 51)
    kwargs = {"plane": plane, "loss": "cross_entropy", "device": device}
    fs.loss_surface(model, (x, y), grid[:3], grid[:3], **kwargs)  # warm-up
    surface = benchmark.pedantic(
        fs.loss_surface, args=(model, (x, y), grid, grid), kwargs=kwargs, rounds=1, iterations=1
    )
    assert surface.loss.shape == (51, 51) and np.isfinite(surface.loss).all()
    print(
        f"\n51x51 random plane, CNN ({sum(p.numel() for p in model.parameters())} parameters), "
        f"{len(x)} samples, {device}: {benchmark.stats.stats.median:.2f} s"
    )
