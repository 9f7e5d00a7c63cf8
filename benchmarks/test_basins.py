"""The seed problem's basin map: 40,000 SGD runs from a 200 x 200 grid of starts, 25 epochs
of batch 64 at lr 1e-2 each, against training one start at a time.

Run: ``python -m pytest benchmarks/test_basins.py -s --benchmark-json=basins.json``
(``fastsurface bench --basins`` prints the same case as a table).

The case, its training route and both baselines come from ``fastsurface.basin_bench``: the
article's training loop (an ``nn.Module``, ``torch.optim.SGD``, ``nn.MSELoss``, one shuffled
batch at a time) and a loop of ``train_sgd`` calls, each timed on the CPU in the same run on a
sample of starts and extrapolated to the 40,000 runs (labelled so in ``extra_info``). The map
is timed warm: its compilation (the compiled route compiles once per tile shape and
architecture, then reuses it from the in-process and on-disk caches) is timed apart. Peak
memory is the process's resident high-water mark during the map (it includes the interpreter
and torch), or CUDA's peak allocation.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from benchmarks.conftest import DEVICES
from fastsurface import basin_bench as bb
from fastsurface.analysis.many import auto_training_method

GRID = bb.seed_grid(200)  # axis(-2, 2, 0.02)
EPOCHS = 25


@pytest.mark.parametrize("device", DEVICES)
def test_seed_basin_map_200x200(benchmark, device):
    train, test = bb.seed_split()
    device = torch.device(device)
    count, steps = len(GRID) ** 2, EPOCHS * math.ceil(len(train[0]) / bb.BATCH)
    route = auto_training_method(count, steps, bb.BATCH, device)
    started = time.perf_counter()
    bb.seed_basin_map(train, test, GRID, 1, device, route)  # warm-up: compiles the step for this tile shape
    warm_up = time.perf_counter() - started
    bb.reset_peak_memory(device)
    basins, runs = benchmark.pedantic(bb.seed_basin_map, args=(train, test, GRID, EPOCHS, device, route), rounds=1)
    peak = bb.peak_memory_bytes(device)
    starts = bb.sampled_starts(GRID)
    baseline = bb.baseline_seconds_per_step(train, test, starts, bb.SAMPLED_EPOCHS)
    plain, looped = baseline["plain_seconds_per_step"], baseline["train_sgd_seconds_per_step"]
    seconds = benchmark.stats.stats.median
    assert runs.count == count and basins.attractor.shape == (len(GRID), len(GRID)) and runs.step[-1] == steps
    benchmark.extra_info.update(
        runs=count,
        steps_per_run=steps,
        training_method=runs.method,
        threads=torch.get_num_threads(),
        map_seconds=seconds,
        train_many_seconds=runs.seconds,
        warm_up_seconds_one_epoch_with_compilation=warm_up,
        seconds_per_run_step=seconds / (count * steps),
        plain_loop_seconds_per_step=plain,
        plain_loop_seconds_extrapolated=plain * steps * count,
        speedup_over_plain_loop_extrapolated=plain * steps * count / seconds,
        train_sgd_seconds_per_step=looped,
        train_sgd_seconds_extrapolated=looped * steps * count,
        speedup_over_train_sgd_loop_extrapolated=looped * steps * count / seconds,
        baseline_sample=f"{len(starts)} starts x {bb.SAMPLED_EPOCHS} epochs each on the CPU, extrapolated",
        peak_memory_bytes=peak,
        attractors=len(basins.sizes),
        largest_basins=basins.sizes[:3].tolist(),
        diverged=int(basins.diverged.sum()),
    )
    print(
        f"\n{count:,} runs x {steps:,} steps on {device} ({runs.method}, {torch.get_num_threads()} threads): "
        f"{seconds:.1f} s ({seconds / (count * steps) * 1e9:.0f} ns a run-step; one-epoch warm-up with compilation "
        f"{warm_up:.1f} s); plain loop {plain * 1e3:.3f} ms a step -> {plain * steps * count / 3600:,.0f} h "
        f"extrapolated, {plain * steps * count / seconds:,.0f}x; train_sgd loop {looped * 1e3:.3f} ms a step, "
        f"{looped * steps * count / seconds:,.0f}x; peak memory {(peak or 0) / 2**30:.2f} GiB; "
        f"{len(basins.sizes)} attractors, largest basins {basins.sizes[:3].tolist()}"
    )
