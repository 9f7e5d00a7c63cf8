"""``fastsurface bench --basins``: the seed problem's basin map, against training one start at a time.

The case is the seed's basin map (issue 14): SGD (lr 1e-2, batch 64, the seed's 8,000 training
samples, so 125 steps an epoch) from every point of a ``grid × grid`` grid over [-2, 2)², 25 epochs
by default, through ``train_many(..., evaluate="final")`` and ``basin_map``. On each device the map
runs once for one epoch (the warm-up: compilation, caches, the CUDA context), once more for one
epoch warm (the estimate: the map is skipped where ``epochs`` times that passes ``max_seconds``),
then ``repeats`` times for the whole map, of which the median is reported.

The training route is the one ``training_method="auto"`` picks for the whole map (``"compiled"``
when runs × steps × batch reaches 1e9 and the toolchain is present, else ``"vmap"``), pinned for
the warm-up too: ``auto`` would train the warm-up's single epoch eagerly and leave the compilation
to the timed map.

Two baselines, timed on the CPU in the same run on a sample of starts and extrapolated to every
run and step (labelled so): the article's training loop (an ``nn.Module``, ``torch.optim.SGD``,
``nn.MSELoss``, one shuffled batch at a time; the CPU is its fastest device for a model of two
weights) and a loop of ``train_sgd`` calls (test losses per epoch included, as it records them).

``of tanh`` is the map's ``tanh`` values per second (runs × epochs × training samples: one ``tanh``
per sample in the forward pass, the backward pass reuses it; runs × steps × 64 for the seed's full
batches) over the device's ``torch.tanh`` throughput, measured in the same run. Peak memory is
CUDA's peak allocation during the map, or on the CPU the process's resident high-water mark
(Linux's ``VmHWM``, reset before the map: it includes the interpreter and torch).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from fastsurface._support.devices import resolve_device
from fastsurface._support.memory import format_bytes
from fastsurface.analysis.basins import basin_map
from fastsurface.analysis.many import auto_training_method, train_many
from fastsurface.analysis.training import train_sgd
from fastsurface.engine._tiles import check_fits
from fastsurface.engine.axes import axis
from fastsurface.engine.options import EvalOptions
from fastsurface.errors import FastsurfaceError, check_positive_int
from fastsurface.results import BasinMap, Trajectories
from fastsurface.seed.bench import activation_rate, aligned, maybe, median_seconds
from fastsurface.seed.data import piecewise_dataset, train_test_split
from fastsurface.seed.model import ANN

BATCH, LR = 64, 1e-2
# The baselines' sample: starts, and epochs of each (their steps cost the same throughout).
SAMPLED_STARTS, SAMPLED_EPOCHS = 3, 2
_CPU = torch.device("cpu")

Pair = tuple[np.ndarray, np.ndarray]


def seed_split() -> tuple[Pair, Pair]:
    """The seed data split 80/20: 8,000 training samples (125 batches of 64 an epoch), 2,000 test."""
    return train_test_split(*piecewise_dataset(), test_size=0.2, seed=0)


def seed_grid(grid: int) -> np.ndarray:
    """``grid`` evenly spaced values over [-2, 2), float64 of shape ``(grid,)``
    (``axis(-2, 2, 0.02)`` for 200)."""
    return axis(-2, 2, 4 / grid)


def sgd(parameters: object) -> torch.optim.Optimizer:
    """The map's optimiser: plain SGD at lr 1e-2."""
    return torch.optim.SGD(parameters, lr=LR)  # type: ignore[arg-type]


def seed_basin_map(
    train: Pair, test: Pair, grid: np.ndarray, epochs: int, device: torch.device, route: str
) -> tuple[BasinMap, Trajectories]:
    """The seed's basin map: a run from every point of ``grid × grid`` on ``route``, final test
    losses only (by the compiled engine where the runs train compiled)."""
    method = "compiled" if route == "compiled" else "auto"
    runs = train_many(
        ANN(1, 1, 1),
        train,
        test,
        grid=(grid, grid),
        epochs=epochs,
        optimizer=sgd,
        batch_size=BATCH,
        device=device,
        evaluate="final",
        method=method,  # type: ignore[arg-type]
        training_method=route,
    )
    return basin_map(runs), runs


def sampled_starts(grid: np.ndarray, count: int = SAMPLED_STARTS) -> np.ndarray:
    """``count`` starts drawn from ``grid × grid`` (seeded), shape ``(count, 2)``."""
    return np.random.default_rng(0).choice(grid, size=(count, 2))


def plain_loop(train: Pair, starts: np.ndarray, epochs: int) -> None:
    """The article's loop on the CPU: for each start, a module, SGD, MSE, one shuffled batch of
    64 at a time, for ``epochs`` epochs."""
    x, y = (torch.as_tensor(part, dtype=torch.float32)[:, None] for part in train)
    for w1, w2 in starts:
        model = ANN(1, 1, 1)
        vector_to_parameters(torch.tensor([w1, w2], dtype=torch.float32), model.parameters())  # (w1, w2) in order
        optimizer, criterion = torch.optim.SGD(model.parameters(), lr=LR), nn.MSELoss()
        generator = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), BATCH):
                index = order[start : start + BATCH]
                optimizer.zero_grad()
                criterion(model(x[index]), y[index]).backward()
                optimizer.step()


def train_sgd_loop(train: Pair, test: Pair, starts: np.ndarray, epochs: int) -> None:
    """A loop of ``train_sgd`` calls on the CPU, one per start (test losses per epoch included,
    as it records them)."""
    for w1, w2 in starts:
        train_sgd(ANN(1, 1, 1), train, test, lr=LR, epochs=epochs, start=(w1, w2), batch_size=BATCH, device=_CPU)


def baseline_seconds_per_step(train: Pair, test: Pair, starts: np.ndarray, epochs: int) -> dict[str, float]:
    """Seconds a step of ``plain_loop`` and of ``train_sgd_loop`` take, each timed from ``starts``
    for ``epochs`` epochs after one untimed epoch from the first start (the first backward pass
    costs milliseconds of set-up that a long run does not repeat)."""
    loops: dict[str, Callable[[np.ndarray, int], object]] = {
        "plain_seconds_per_step": lambda chosen, count: plain_loop(train, chosen, count),
        "train_sgd_seconds_per_step": lambda chosen, count: train_sgd_loop(train, test, chosen, count),
    }
    steps = len(starts) * epochs * math.ceil(len(train[0]) / BATCH)
    result = {}
    for name, loop in loops.items():
        loop(starts[:1], 1)
        started = time.perf_counter()
        loop(starts, epochs)
        result[name] = (time.perf_counter() - started) / steps
    return result


def reset_peak_memory(device: torch.device) -> None:
    """Restart the peak that ``peak_memory_bytes`` reads from now."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: restart VmHWM from the current RSS; elsewhere (or not allowed) the peak covers the process's life.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_bytes(device: torch.device) -> int | None:
    """CUDA's peak allocation on ``device``, or the process's resident high-water mark (Linux's
    ``VmHWM``) for the CPU; None where neither can be read."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")), None)


@dataclass(frozen=True)
class BasinRow:
    """One line of the table: the map on one device. The map's fields are None where it was
    skipped (``note`` gives the estimate); baselines are per step on the CPU, extrapolated to
    ``runs × steps_per_run``."""

    device: str
    runs: int
    steps_per_run: int
    method: str
    warm_up_seconds: float
    estimate_seconds: float
    seconds: float | None
    ns_per_run_step: float | None
    plain_seconds_per_step: float
    plain_seconds: float
    plain_speedup: float | None
    train_sgd_seconds_per_step: float
    train_sgd_seconds: float
    train_sgd_speedup: float | None
    tanh_fraction: float | None
    peak_memory_bytes: int | None
    attractors: int | None
    diverged: int | None
    note: str


def run_basin_bench(
    devices: Sequence[torch.device | str],
    grid: int = 200,
    epochs: int = 25,
    repeats: int = 1,
    max_seconds: float = 600.0,
) -> dict[str, Any]:
    """Time the seed's ``grid × grid`` basin map of ``epochs`` epochs on every device, against the
    two baselines; returns ``{"rows": [...], "machine": {...}, "grid", "epochs", "batch_size",
    "lr", "baseline": {...}}`` (rows as dicts of ``BasinRow``'s fields; the machine's torch
    version, threads and each device's ``tanh`` values per second).

    Every argument, and the grid against each device's memory, is checked before anything runs.
    ``max_seconds`` bounds each device's map (estimated from a warm epoch) and the rounds of
    ``repeats``.
    """
    resolved = _check(devices, grid, epochs, repeats, max_seconds)
    train, test = seed_split()
    axis_values = seed_grid(grid)
    starts = sampled_starts(axis_values, min(SAMPLED_STARTS, grid * grid))
    sampled_epochs = min(SAMPLED_EPOCHS, epochs)
    baseline = {"device": "cpu", "starts": len(starts), "epochs": sampled_epochs}
    baseline |= baseline_seconds_per_step(train, test, starts, sampled_epochs)
    ceilings = {
        str(device): {"tanh_per_second": activation_rate(device, "tanh", 3, max_seconds)} for device in resolved
    }
    rows = [
        _measure(device, (train, test), axis_values, epochs, repeats, max_seconds, baseline, ceilings[str(device)])
        for device in resolved
    ]
    machine: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "ceilings": ceilings}
    if torch.cuda.is_available():
        machine["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "rows": [asdict(row) for row in rows],
        "machine": machine,
        "grid": grid,
        "epochs": epochs,
        "batch_size": BATCH,
        "lr": LR,
        "baseline": baseline,
    }


def _check(
    devices: Sequence[torch.device | str], grid: int, epochs: int, repeats: int, max_seconds: float
) -> list[torch.device]:
    """The devices, resolved and deduplicated, once every argument passed its check."""
    if isinstance(devices, (str, torch.device)) or not isinstance(devices, Sequence) or not devices:
        raise FastsurfaceError(f"`devices` must be a non-empty list of devices, got {devices!r}")
    resolved = list(dict.fromkeys(resolve_device(device) for device in devices))
    for label, value in (("grid", grid), ("epochs", epochs), ("repeats", repeats)):
        check_positive_int(label, value)
    if grid < 2:
        raise FastsurfaceError(f"`grid` must be at least 2 (a basin map needs a plane of starts), got {grid}")
    real = isinstance(max_seconds, numbers.Real) and not isinstance(max_seconds, bool)
    if not real or not 0 < max_seconds < math.inf:
        raise FastsurfaceError(f"`max_seconds` must be a finite number > 0, got {max_seconds!r}")
    for device in resolved:
        check_fits((grid, grid), device, EvalOptions(device=device).budget, None, name="`grid`")
    return resolved


def _measure(
    device: torch.device,
    data: tuple[Pair, Pair],
    grid: np.ndarray,
    epochs: int,
    repeats: int,
    max_seconds: float,
    baseline: dict[str, Any],
    ceilings: dict[str, float],
) -> BasinRow:
    """Warm up, estimate, and (within ``max_seconds``) time the map on ``device``; its row."""
    runs, per_epoch = len(grid) ** 2, math.ceil(len(data[0][0]) / BATCH)
    steps = epochs * per_epoch
    route = auto_training_method(runs, steps, BATCH, device)

    def work(epochs_: int) -> tuple[BasinMap, Trajectories]:
        return seed_basin_map(*data, grid, epochs_, device, route)

    warm_up = median_seconds(lambda: work(1), device, 1, math.inf)
    estimate = epochs * median_seconds(lambda: work(1), device, 1, math.inf)
    common: dict[str, Any] = {
        "device": str(device),
        "runs": runs,
        "steps_per_run": steps,
        "method": route,
        "warm_up_seconds": warm_up,
        "estimate_seconds": estimate,
        "plain_seconds_per_step": baseline["plain_seconds_per_step"],
        "plain_seconds": baseline["plain_seconds_per_step"] * runs * steps,
        "train_sgd_seconds_per_step": baseline["train_sgd_seconds_per_step"],
        "train_sgd_seconds": baseline["train_sgd_seconds_per_step"] * runs * steps,
    }
    if estimate > max_seconds:
        timed = ("seconds", "ns_per_run_step", "plain_speedup", "train_sgd_speedup", "tanh_fraction")
        found = ("peak_memory_bytes", "attractors", "diverged")
        skipped: dict[str, Any] = dict.fromkeys(timed + found)
        return BasinRow(**common, **skipped, note=f"map skipped: est. {estimate:.0f} s")
    results: list[tuple[BasinMap, Trajectories]] = []
    reset_peak_memory(device)
    seconds = median_seconds(lambda: results.append(work(epochs)), device, repeats, max_seconds)
    peak = peak_memory_bytes(device)
    basins, trained = results[-1]
    tanh_values = runs * epochs * len(data[0][0])
    return BasinRow(
        **(common | {"method": trained.method}),
        seconds=seconds,
        ns_per_run_step=seconds / (runs * steps) * 1e9,
        plain_speedup=common["plain_seconds"] / seconds,
        train_sgd_speedup=common["train_sgd_seconds"] / seconds,
        tanh_fraction=tanh_values / seconds / ceilings["tanh_per_second"],
        peak_memory_bytes=peak,
        attractors=len(basins.sizes),
        diverged=int(basins.diverged.sum()),
        note="",
    )


def format_basin_table(result: dict[str, Any]) -> str:
    """The rows as an aligned text table, with the case, the baselines and the ceilings below it."""
    header = (
        *("device", "runs", "steps", "route", "warm-up s", "map s", "ns/run-step", "of tanh", "peak"),
        *("attractors", "diverged", "plain s", "vs plain", "train_sgd s", "vs train_sgd", ""),
    )
    lines: list[tuple[str, ...]] = [header]
    for row in result["rows"]:
        peak = row["peak_memory_bytes"]
        lines.append(
            (
                row["device"],
                f"{row['runs']:,}",
                f"{row['steps_per_run']:,}",
                row["method"],
                f"{row['warm_up_seconds']:.3g}",
                maybe(row["seconds"], "{:.3g}"),
                maybe(row["ns_per_run_step"], "{:.3g}"),
                maybe(row["tanh_fraction"], "{:.1%}"),
                "-" if peak is None else format_bytes(peak),
                maybe(row["attractors"], "{}"),
                maybe(row["diverged"], "{:,}"),
                f"{row['plain_seconds']:.3g}",
                maybe(row["plain_speedup"], "{:,.0f}x"),
                f"{row['train_sgd_seconds']:.3g}",
                maybe(row["train_sgd_speedup"], "{:,.0f}x"),
                row["note"],
            )
        )
    baseline, machine = result["baseline"], result["machine"]
    sample = f"extrapolated from {baseline['starts']} starts x {baseline['epochs']} epochs"
    ceilings = "; ".join(f"{device}: {c['tanh_per_second']:.3g}/s" for device, c in machine["ceilings"].items())
    footer = (
        f"seed basin map: {result['grid']} x {result['grid']} starts over [-2, 2)^2, {result['epochs']} epochs of SGD "
        f"(lr {result['lr']:g}, batch {result['batch_size']}) on 8,000 samples; map s: train_many + basin_map, median "
        "of the rounds after a one-epoch warm-up on the same route (warm-up s, compilation included)",
        f"baselines timed on the CPU (the plain loop's fastest device for a two-weight model), {sample}: plain loop "
        f"(nn.Module, torch.optim.SGD, nn.MSELoss, one shuffled batch at a time) "
        f"{baseline['plain_seconds_per_step'] * 1e3:.3g} ms a step; train_sgd loop "
        f"{baseline['train_sgd_seconds_per_step'] * 1e3:.3g} ms a step",
        f"of tanh: runs x epochs x samples tanh values a second over torch.tanh's, measured in this run "
        f"(torch {machine['torch']}, {machine['threads']} threads): {ceilings}; peak: CUDA's peak allocation, "
        "or the CPU process's resident high-water mark during the map",
    )
    return "\n".join([*aligned(lines), *footer])
