"""Shared benchmark inputs and the naive-loop baseline, measured once per run."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import fastsurface as fs

SEED_AXIS = fs.axis(-2, 2, 0.05)
# The article's loop takes about 20 ms a point on the seed data: it is timed on a
# few sampled rows of the grid and reported per point, never on all 6,400 points.
NAIVE_ROWS = 2


@pytest.fixture(scope="session")
def seed_test() -> tuple[np.ndarray, np.ndarray]:
    """The seed test split: 2,000 samples."""
    return fs.train_test_split(*fs.piecewise_dataset(), test_size=0.2, seed=0)[1]


@pytest.fixture(scope="session")
def naive_seconds_per_point(seed_test) -> float:
    """Seconds a point of the article's loop (DataLoader, batch 64, float32) takes."""
    rows = np.random.default_rng(0).choice(SEED_AXIS, NAIVE_ROWS, replace=False)
    started = time.perf_counter()
    fs.naive_loss_surface(fs.ANN(1, 1, 1), seed_test, rows, SEED_AXIS, reduction="batch_mean", dtype=torch.float32)
    return (time.perf_counter() - started) / (NAIVE_ROWS * len(SEED_AXIS))


def report_ratio(benchmark, naive_seconds_per_point: float, points: int) -> None:
    """Record the speed-up over the naive loop (same run) in the benchmark's extra info."""
    engine = benchmark.stats.stats.median
    naive = naive_seconds_per_point * points
    benchmark.extra_info.update(
        naive_seconds_extrapolated=naive, engine_seconds_median=engine, speedup_over_naive=naive / engine
    )
    print(
        f"\n{benchmark.name}: engine {engine * 1e3:.2f} ms, naive {naive:.1f} s (extrapolated), {naive / engine:,.0f}x"
    )
