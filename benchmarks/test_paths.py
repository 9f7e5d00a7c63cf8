"""Every engine path on the seed problem (2,000 test samples) against the article's loop.

Run: ``python -m pytest benchmarks -s --benchmark-json=bench.json``. Ratios (speed-up
over the naive loop, fraction of the device's tanh throughput) are in each benchmark's
``extra_info`` and printed with ``-s``.
"""

from __future__ import annotations

import pytest

import fastsurface as fs
from benchmarks.conftest import DEVICES, report

CASES = [
    ("closed_form", 0.05, 20),
    ("compiled", 0.05, 20),
    ("vmap", 0.05, 5),
    ("closed_form", 0.01, 10),
    ("compiled", 0.01, 3),
    ("closed_form", 0.001, 3),
    ("compiled", 0.001, 1),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("method", "step", "rounds"), CASES, ids=[f"{m}-{s}" for m, s, _ in CASES])
def test_path(benchmark, seed_test, naive_per_point, tanh_per_second, device, method, step, rounds):
    grid = fs.axis(-2, 2, step)
    model = fs.ANN(1, 1, 1)

    def evaluate():
        return fs.loss_surface(model, seed_test, grid, grid, device=device, method=method)

    evaluate()  # warm-up: compilation, caches, CUDA context
    surface = benchmark.pedantic(evaluate, rounds=rounds, iterations=1)
    assert surface.method == method
    report(benchmark, surface.loss.size, surface.samples, naive_per_point, tanh_per_second[device])
