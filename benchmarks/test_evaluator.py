"""The prepared evaluator on the seed problem: repeated 80 x 80 surfaces (step 0.05, the
2,000 test samples) through one ``fs.Evaluator``, against the article's loop timed in
the same run (issue 16's goal: at least 50,000x).

Run: ``python -m pytest benchmarks/test_evaluator.py -s``. The median of 100 calls is
reported; the first call (structure probe, data on the device) is timed apart.
"""

from __future__ import annotations

import time

import pytest

import fastsurface as fs
from benchmarks.conftest import DEVICES, report


@pytest.mark.parametrize("device", DEVICES)
def test_seed_80x80_through_an_evaluator(benchmark, seed_test, naive_per_point, tanh_per_second, device):
    grid = fs.axis(-2, 2, 0.05)
    evaluator = fs.Evaluator(fs.ANN(1, 1, 1), seed_test, device=device)
    started = time.perf_counter()
    first = evaluator.surface(grid, grid)
    benchmark.extra_info["first_call_seconds"] = time.perf_counter() - started
    surface = benchmark.pedantic(evaluator.surface, args=(grid, grid), rounds=100, iterations=1)
    assert surface.method == first.method == "closed_form" and surface.loss.shape == (80, 80)
    report(benchmark, surface.loss.size, surface.samples, naive_per_point, tanh_per_second[device])
