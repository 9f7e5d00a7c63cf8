"""``fastsurface bench``: the seed problem on every device and engine method, in one table.

Every speed-up is against the article's loop measured in the same run: the naive loop
(``naive.py``) is timed on a few sampled grid rows and its seconds per point are
extrapolated to each grid, and labelled as such. The ceiling is the device's own
``torch.tanh`` throughput over a large float32 tensor, measured in the same run: a
brute-force evaluation needs at least one ``tanh`` per point and sample, so
``points × samples / s`` over that throughput says how close a method runs to the
hardware. It is a practical ceiling, not a bound: ``torch.tanh`` over 50 M values is
limited by memory traffic, while the compiled kernel keeps each value in registers and
computes ``tanh`` as a rational function (``inductor.accurate_tanh``), so it can run
above 100 %.
The closed form does not evaluate every point and sample, so its rate is an effective
one and exceeds the ceiling by far.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from fastsurface._support.choices import BENCH_METHODS, Method
from fastsurface._support.devices import synchronize
from fastsurface.engine.axes import axis
from fastsurface.engine.evaluate import loss_surface
from fastsurface.seed.data import piecewise_dataset, train_test_split
from fastsurface.seed.model import ANN
from fastsurface.seed.naive import naive_loss_surface

_TANH_ELEMENTS = 50_000_000


@dataclass(frozen=True)
class BenchRow:
    """One line of the table; ``seconds`` is ``None`` for a skipped case."""

    device: str
    method: str
    step: float
    points: int
    samples: int
    seconds: float | None
    rate: float | None
    speedup: float | None
    ceiling_fraction: float | None
    note: str


def run_bench(
    devices: list[torch.device],
    steps: list[float],
    methods: tuple[Method, ...] = BENCH_METHODS,
    repeats: int = 3,
    max_seconds: float = 60.0,
    naive_rows: int = 2,
) -> dict[str, Any]:
    """Measure every (device, method, step); returns ``{"rows": [...], "machine": {...}}``."""
    _, (x, y) = train_test_split(*piecewise_dataset(), test_size=0.2, seed=0)
    naive_per_point = naive_seconds_per_point(x, y, naive_rows)
    rows, ceilings = [], {}
    for device in devices:
        ceilings[str(device)] = tanh_rate(device, repeats)
        for method in methods:
            rate = None
            for step in steps:
                row = _measure(
                    device, method, step, (x, y), rate, repeats, max_seconds, naive_per_point, ceilings[str(device)]
                )
                rows.append(row)
                rate = row.rate or rate
        for step in steps:
            rows.append(_naive_row(device, step, len(x), naive_per_point))
    machine = {"torch": torch.__version__, "threads": torch.get_num_threads(), "tanh_per_second": ceilings}
    if torch.cuda.is_available():
        machine["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"rows": [asdict(row) for row in rows], "machine": machine, "naive_seconds_per_point": naive_per_point}


def format_table(result: dict[str, Any]) -> str:
    """The rows as an aligned text table with a header."""
    header = (
        "device",
        "method",
        "step",
        "grid points",
        "samples",
        "seconds",
        "pts·samples/s",
        "vs naive",
        "of tanh",
        "",
    )
    lines = [header]
    for row in result["rows"]:
        lines.append(
            (
                row["device"],
                row["method"],
                f"{row['step']:g}",
                f"{row['points']:,}",
                f"{row['samples']:,}",
                _maybe(row["seconds"], "{:.4g}"),
                _maybe(row["rate"], "{:.3g}"),
                _maybe(row["speedup"], "{:,.0f}x"),
                _maybe(row["ceiling_fraction"], "{:.0%}"),
                row["note"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    ceilings = ", ".join(f"{d}: {r:.3g}/s" for d, r in result["machine"]["tanh_per_second"].items())
    footer = (
        f"tanh ceiling (torch.tanh over {_TANH_ELEMENTS:,} float32, memory-bound): {ceilings}; "
        "a fused kernel can pass 100 %"
    )
    return "\n".join([*text, footer])


def _maybe(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _measure(
    device: torch.device,
    method: Method,
    step: float,
    data: tuple[np.ndarray, np.ndarray],
    rate: float | None,
    repeats: int,
    max_seconds: float,
    naive_per_point: float,
    ceiling: float,
) -> BenchRow:
    grid = axis(-2, 2, step)
    points, samples = len(grid) ** 2, len(data[0])
    if rate is not None and points * samples / rate > max_seconds:
        estimate = points * samples / rate
        return BenchRow(
            str(device), method, step, points, samples, None, None, None, None, f"skipped: est. {estimate:.0f} s"
        )
    model = ANN(1, 1, 1)

    def evaluate() -> object:
        return loss_surface(model, data, grid, grid, device=device, method=method)

    evaluate()  # warm-up: compilation, caches, CUDA context
    seconds = _median_seconds(evaluate, device, repeats, max_seconds)
    work = points * samples / seconds
    note = "effective rate" if method == "closed_form" else ""
    return BenchRow(
        str(device),
        method,
        step,
        points,
        samples,
        seconds,
        work,
        naive_per_point * points / seconds,
        work / ceiling,
        note,
    )


def _naive_row(device: torch.device, step: float, samples: int, per_point: float) -> BenchRow:
    points = len(axis(-2, 2, step)) ** 2
    seconds = per_point * points
    return BenchRow(
        str(device),
        "naive",
        step,
        points,
        samples,
        seconds,
        points * samples / seconds,
        1.0,
        None,
        "article's loop on CPU, extrapolated from sampled rows",
    )


def _median_seconds(work: Callable[[], object], device: torch.device, repeats: int, max_seconds: float) -> float:
    times: list[float] = []
    while len(times) < repeats and sum(times) < max_seconds:
        synchronize(device)
        started = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def naive_seconds_per_point(x: np.ndarray, y: np.ndarray, rows: int) -> float:
    """Seconds per point of the article's loop (batch 64, float32, CPU) on ``rows``
    sampled rows of the seed grid."""
    grid = axis(-2, 2, 0.05)
    sampled = np.sort(np.random.default_rng(0).choice(grid, rows, replace=False))
    started = time.perf_counter()
    naive_loss_surface(ANN(1, 1, 1), (x, y), sampled, grid, reduction="batch_mean", dtype=torch.float32)
    return (time.perf_counter() - started) / (rows * len(grid))


def tanh_rate(device: torch.device, repeats: int) -> float:
    """Elements per second of ``torch.tanh`` over 50 M float32 on ``device`` (median)."""
    values = torch.linspace(-3, 3, _TANH_ELEMENTS, device=device)
    out = torch.empty_like(values)
    torch.tanh(values, out=out)
    seconds = _median_seconds(lambda: torch.tanh(values, out=out), device, max(repeats, 3), float("inf"))
    return _TANH_ELEMENTS / seconds
