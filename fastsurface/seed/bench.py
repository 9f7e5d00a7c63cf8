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

The ceilings (``activation_rate``: ``tanh`` and ReLU values per second; ``sgemm_rate``),
the timing (``median_seconds``) and the table's layout (``aligned``) are shared with the
real models' bench, ``fastsurface.model_bench``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch

from fastsurface._support.choices import BENCH_METHODS, Method
from fastsurface._support.devices import synchronize
from fastsurface.engine.axes import axis
from fastsurface.engine.evaluate import loss_surface
from fastsurface.errors import check_choice
from fastsurface.seed.data import piecewise_dataset, train_test_split
from fastsurface.seed.model import ANN
from fastsurface.seed.naive import naive_loss_surface

# Elements of the activation ceilings' tensors: far beyond every cache, so they measure
# the device's streaming rate.
_ELEMENTWISE_VALUES = 50_000_000
# Side of the square matrices of the sgemm ceiling, per device type.
_SGEMM_SIZE = {"cpu": 1024, "cuda": 4096}
# The activations whose throughput is a ceiling.
Activation = Literal["tanh", "relu"]
ACTIVATIONS: tuple[Activation, ...] = get_args(Activation)


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
        ceilings[str(device)] = activation_rate(device, "tanh", repeats, max_seconds)
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
                maybe(row["seconds"], "{:.4g}"),
                maybe(row["rate"], "{:.3g}"),
                maybe(row["speedup"], "{:,.0f}x"),
                maybe(row["ceiling_fraction"], "{:.0%}"),
                row["note"],
            )
        )
    ceilings = ", ".join(f"{d}: {r:.3g}/s" for d, r in result["machine"]["tanh_per_second"].items())
    footer = (
        f"tanh ceiling (torch.tanh over {_ELEMENTWISE_VALUES:,} float32, memory-bound): {ceilings}; "
        "a fused kernel can pass 100 %"
    )
    return "\n".join([*aligned(lines), footer])


def aligned(lines: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows of cells (the first one the header) as text lines, each column padded to its widest cell."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]


def maybe(value: float | None, pattern: str, missing: str = "-") -> str:
    """``value`` formatted by ``pattern``, or ``missing`` where there is none."""
    return missing if value is None else pattern.format(value)


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
    seconds = median_seconds(evaluate, device, repeats, max_seconds)
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


def median_seconds(work: Callable[[], object], device: torch.device, repeats: int, max_seconds: float) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``work`` (the device synchronised
    around each), fewer once the calls so far took ``max_seconds``; at least one."""
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


def activation_rate(
    device: torch.device, activation: Activation, repeats: int, max_seconds: float = float("inf")
) -> float:
    """Values per second of ``torch.tanh`` or ReLU (``torch.clamp_min(x, 0)``, what ``torch.relu``
    computes, written to a preallocated output as ``tanh`` is) over 50 M float32 on ``device``
    (median of ``repeats`` runs, at least 3, fewer once ``max_seconds`` is spent)."""
    check_choice("activation", activation, ACTIVATIONS)
    values = torch.linspace(-3, 3, _ELEMENTWISE_VALUES, device=device)
    out = torch.empty_like(values)
    functions: dict[str, Callable[[], object]] = {
        "tanh": lambda: torch.tanh(values, out=out),
        "relu": lambda: torch.clamp_min(values, 0, out=out),
    }
    functions[activation]()  # warm-up: first-touch page faults, CUDA kernels
    seconds = median_seconds(functions[activation], device, max(repeats, 3), max_seconds)
    return _ELEMENTWISE_VALUES / seconds


def sgemm_rate(device: torch.device, repeats: int, max_seconds: float = float("inf")) -> float:
    """FLOP per second of one float32 matrix product (``torch.mm``) of two square matrices on
    ``device``, counting ``2·n³`` (median of ``repeats`` runs, at least 3, fewer once
    ``max_seconds`` is spent). ``n`` is 1024 on a CPU (large enough for the BLAS's blocked
    kernels), 4096 on CUDA (enough blocks to fill the device)."""
    size = _SGEMM_SIZE.get(device.type, _SGEMM_SIZE["cuda"])
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator).to(device) for _ in range(2))
    out = torch.empty(size, size, device=device)
    torch.mm(left, right, out=out)
    seconds = median_seconds(lambda: torch.mm(left, right, out=out), device, max(repeats, 3), max_seconds)
    return 2 * size**3 / seconds
