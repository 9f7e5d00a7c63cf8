"""Any model, any plane: the loss-landscapes drop-in against the package, and the cases of
``fastsurface bench --model`` (MLPs, a digits-sized CNN) against the package and a per-point loop.

Run: ``python -m pytest benchmarks/test_any_model.py -s --benchmark-json=bench.json``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface.compat.loss_landscapes as drop_in
from fastsurface._support.choices import BENCH_MODELS
from fastsurface._support.devices import synchronize
from fastsurface.model_bench import (
    TOLERANCE,
    format_model_table,
    loss_landscapes_package,
    machine,
    measure_case,
    model_case,
    place,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
STEPS = 41
SAMPLES = 2_000


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
SMALL_MLP = "mlp-10-32-32-1-tanh"
TINY_MLP = "mlp-2-8-1-tanh"
MLP_CASES = [
    pytest.param("cpu", "random_plane", SMALL_MLP, id="cpu-random_plane-small"),
    pytest.param("cpu", "planar_interpolation", SMALL_MLP, id="cpu-planar_interpolation-small"),
    pytest.param("cpu", "random_plane", TINY_MLP, id="cpu-random_plane-tiny"),
    pytest.param(
        "cuda", "planar_interpolation", SMALL_MLP, marks=DEVICES[1].marks, id="cuda-planar_interpolation-small"
    ),
]


@pytest.mark.parametrize(("device", "plane", "name"), MLP_CASES)
def test_drop_in_against_loss_landscapes(benchmark, device, plane, name):
    package = pytest.importorskip("loss_landscapes")
    pytest.importorskip("loss_landscapes.metrics")
    case = model_case(name, SAMPLES)
    model, x, y = case.model.to(device), case.x.to(device), case.y.to(device)
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
        f"\n41x41 {plane}, {name}, {SAMPLES} samples, {device}: "
        f"loss-landscapes {seconds:.2f} s, drop-in {ours * 1e3:.1f} ms, {seconds / ours:.1f}x"
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", BENCH_MODELS)
def test_model_case(benchmark, ceilings, device, name):
    """A case of ``fastsurface bench --model``: fastsurface's rounds timed by pytest-benchmark,
    and the bench's row (per-point loop, loss-landscapes, fractions of the ceilings, each
    ratio from interleaved rounds of one run, the losses checked) in ``extra_info``."""
    placed = place(model_case(name, SAMPLES), torch.device(device), STEPS)
    package = loss_landscapes_package()
    row = measure_case(placed, 3, 60.0, ceilings[device], package)
    surface = benchmark.pedantic(placed.surface, rounds=3, iterations=1, warmup_rounds=1)
    assert surface.loss.shape == (STEPS, STEPS) and row.error < TOLERANCE
    benchmark.extra_info.update(asdict(row))
    described = machine({device: ceilings[device]}, package)
    print("\n" + format_model_table({"rows": [asdict(row)], "machine": described, "grid": STEPS, "samples": SAMPLES}))
