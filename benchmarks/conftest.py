"""Shared benchmark inputs and the baselines each ratio needs, measured once per run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.model_bench import measure_ceilings
from fastsurface.seed.bench import naive_seconds_per_point

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="session")
def seed_test() -> tuple[np.ndarray, np.ndarray]:
    """The seed test split: 2,000 samples."""
    return fs.train_test_split(*fs.piecewise_dataset(), test_size=0.2, seed=0)[1]


@pytest.fixture(scope="session")
def naive_per_point(seed_test) -> float:
    """Seconds a point of the article's loop takes (timed on two sampled grid rows)."""
    return naive_seconds_per_point(*seed_test, rows=2)


@pytest.fixture(scope="session")
def ceilings() -> dict[str, dict[str, float]]:
    """Each device's sgemm FLOP/s and ``tanh`` and ReLU values / s, measured once per run."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {name: measure_ceilings(torch.device(name), repeats=5) for name in devices}


@pytest.fixture(scope="session")
def tanh_per_second(ceilings) -> dict[str, float]:
    """Each device's ``torch.tanh`` throughput (elements / s), the seed's brute-force ceiling."""
    return {name: measured["tanh_per_second"] for name, measured in ceilings.items()}


def report(benchmark, points: int, samples: int, naive_per_point: float, tanh_per_second: float) -> None:
    """Record speed-up over the naive loop and fraction of the tanh ceiling (same run)."""
    seconds = benchmark.stats.stats.median
    rate = points * samples / seconds
    benchmark.extra_info.update(
        points=points,
        samples=samples,
        median_seconds=seconds,
        points_samples_per_second=rate,
        speedup_over_naive=naive_per_point * points / seconds,
        naive_seconds_extrapolated=naive_per_point * points,
        fraction_of_tanh_ceiling=rate / tanh_per_second,
    )
    print(
        f"\n{benchmark.name}: {seconds * 1e3:.2f} ms, {rate:.3g} pts*samples/s, "
        f"{naive_per_point * points / seconds:,.0f}x naive (extrapolated), {rate / tanh_per_second:.0%} of tanh"
    )
