"""The seed grid (80 x 80, 2,000 test samples): the engine against the article's loop.

Run: ``python -m pytest benchmarks -s --benchmark-json=bench.json``.
"""

from __future__ import annotations

import pytest
import torch

import fastsurface as fs
from benchmarks.conftest import SEED_AXIS, report_ratio

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
@pytest.mark.parametrize("device", DEVICES)
def test_engine_on_the_seed_grid(benchmark, seed_test, naive_seconds_per_point, device, reduction):
    model = fs.ANN(1, 1, 1)
    fs.loss_surface(model, seed_test, SEED_AXIS, SEED_AXIS, device=device, reduction=reduction)  # warm-up
    surface = benchmark.pedantic(
        fs.loss_surface,
        args=(model, seed_test, SEED_AXIS, SEED_AXIS),
        kwargs={"device": device, "reduction": reduction},
        rounds=10,
        iterations=1,
    )
    assert surface.loss.shape == (80, 80)
    report_ratio(benchmark, naive_seconds_per_point, surface.loss.size)
