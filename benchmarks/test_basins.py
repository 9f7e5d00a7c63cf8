"""The seed problem's basin map: 40,000 SGD runs from a 200 x 200 grid of starts, 25 epochs
of batch 64 at lr 1e-2 each, against training one start at a time.

Run: ``python -m pytest benchmarks/test_basins.py -s --benchmark-json=basins.json``.

Two baselines, each timed in the same run on a sample of starts and extrapolated to the
40,000 runs (labelled so in ``extra_info``): the article's training loop (an
``nn.Module``, ``torch.optim.SGD``, ``nn.MSELoss``, one shuffled batch at a time) and a
loop of ``train_sgd`` calls. The map is timed warm: its compilation (the compiled route
compiles once per tile shape and architecture, then reuses it from the in-process and
on-disk caches) is timed apart. Peak memory is the process's resident high-water mark
during the map (it includes the interpreter and torch), or CUDA's peak allocation.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from benchmarks.conftest import DEVICES
from fastsurface.engine._kernels import compile_available

GRID = fs.axis(-2, 2, 0.02)  # 200 values a side
EPOCHS, BATCH, LR = 25, 64, 1e-2
# The baselines' sample: starts, and epochs of each (their steps cost the same throughout).
SAMPLED_STARTS, SAMPLED_EPOCHS = 3, 2


@pytest.fixture(scope="module")
def seed_split():
    """The seed data split 80/20: 8,000 training samples (125 batches an epoch), 2,000 test."""
    return fs.train_test_split(*fs.piecewise_dataset(), test_size=0.2, seed=0)


def _starts() -> np.ndarray:
    return np.random.default_rng(0).choice(GRID, size=(SAMPLED_STARTS, 2))


def _plain_loop_seconds_per_step(train: tuple[np.ndarray, np.ndarray]) -> float:
    """The article's loop: a module, SGD, MSE, one shuffled batch of 64 at a time."""
    x, y = (torch.as_tensor(part, dtype=torch.float32)[:, None] for part in train)
    started, steps = time.perf_counter(), 0
    for w1, w2 in _starts():
        model = fs.ANN(1, 1, 1)
        with torch.no_grad():
            model.net.Layer_1.weight.fill_(float(w1))
            model.net.Layer_2.weight.fill_(float(w2))
        optimizer, criterion = torch.optim.SGD(model.parameters(), lr=LR), nn.MSELoss()
        generator = torch.Generator().manual_seed(0)
        for _ in range(SAMPLED_EPOCHS):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), BATCH):
                index = order[start : start + BATCH]
                optimizer.zero_grad()
                criterion(model(x[index]), y[index]).backward()
                optimizer.step()
                steps += 1
    return (time.perf_counter() - started) / steps


def _train_sgd_seconds_per_step(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    """A loop of ``train_sgd`` calls (test losses per epoch included, as it records them)."""
    started = time.perf_counter()
    for w1, w2 in _starts():
        fs.train_sgd(fs.ANN(1, 1, 1), train, test, lr=LR, epochs=SAMPLED_EPOCHS, start=(w1, w2), device="cpu")
    return (time.perf_counter() - started) / (SAMPLED_STARTS * SAMPLED_EPOCHS * math.ceil(len(train[0]) / BATCH))


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: restart VmHWM from the current RSS


def _peak_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


@pytest.mark.parametrize("device", DEVICES)
def test_seed_basin_map_200x200(benchmark, seed_split, device):
    train, test = seed_split
    # The runs' final losses: the compiled engine where it builds (the closed form is
    # exact too, but evaluates listed points one free coordinate at a time).
    method = "compiled" if compile_available(torch.device(device)) else "auto"
    # The same training route for the warm-up's one epoch as for the map's 25 (``auto``
    # would train one epoch's smaller work eagerly and leave the compile to the map).
    options = {"batch_size": BATCH, "device": device, "evaluate": "final", "method": method, "training_method": method}

    def basin_map(epochs: int) -> tuple[fs.BasinMap, fs.Trajectories]:
        runs = fs.train_many(fs.ANN(1, 1, 1), train, test, grid=(GRID, GRID), epochs=epochs, optimizer=_sgd, **options)
        return fs.basin_map(runs), runs

    started = time.perf_counter()
    basin_map(1)  # warm-up: compiles the step for this tile shape
    warm_up = time.perf_counter() - started
    _reset_peak(device)
    basins, runs = benchmark.pedantic(basin_map, args=(EPOCHS,), rounds=1, iterations=1)
    peak = _peak_bytes(device)
    plain, looped = _plain_loop_seconds_per_step(train), _train_sgd_seconds_per_step(train, test)
    seconds = benchmark.stats.stats.median
    steps = EPOCHS * math.ceil(len(train[0]) / BATCH)
    count = len(GRID) ** 2
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
        baseline_sample=f"{SAMPLED_STARTS} starts x {SAMPLED_EPOCHS} epochs each, extrapolated",
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
        f"{looped * steps * count / seconds:,.0f}x; peak memory {peak / 2**30:.2f} GiB; "
        f"{len(basins.sizes)} attractors, largest basins {basins.sizes[:3].tolist()}"
    )


def _sgd(parameters):
    return torch.optim.SGD(parameters, lr=LR)
