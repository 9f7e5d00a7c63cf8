"""``fastsurface bench``: every method on every device against the article's loop, in one table;
with ``--model``, real models against loss-landscapes and a per-point loop (``fastsurface.model_bench``);
with ``--basins``, the seed's basin map against training one start at a time (``fastsurface.basin_bench``)."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

import fastsurface as fs
from fastsurface._support.choices import BENCH_METHODS, BENCH_MODELS, Method
from fastsurface._support.files import atomic_write_text, check_writable
from fastsurface.cli import _shared
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError, check_positive_int

if TYPE_CHECKING:
    import torch


# Each mode's own flags, with their defaults in that mode: a flag is refused in the modes it does
# not belong to, so these are declared without a default (argparse.SUPPRESS) to see which were given.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "seed": {"steps": [0.05, 0.01, 0.001], "methods": list(BENCH_METHODS), "naive_rows": 2},
    "model": {"grid": 41, "samples": 2_000},
    "basins": {"grid": 200, "epochs": 25},
}
_MODES = {"seed": "without `--model` or `--basins`", "model": "with `--model`", "basins": "with `--basins`"}


def declare(parser: argparse.ArgumentParser) -> None:
    """Devices, grid steps, methods and the time allowed; or model cases, their grid and samples."""
    parser.add_argument("--device", action="append", help="cpu, cuda or cuda:N; repeat for several (default: all)")
    parser.add_argument(
        "--steps", nargs="+", type=float, default=argparse.SUPPRESS, help="grid steps (default: 0.05 0.01 0.001)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=BENCH_METHODS,
        default=argparse.SUPPRESS,
        help=f"engine paths (default: {' '.join(BENCH_METHODS)})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (the median is reported)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="skip cases estimated to take longer (with --model: the seconds each contestant's rounds may "
        "take on a case; a per-point loop estimated longer is timed on fewer rows and extrapolated; with --basins: "
        "a device's map estimated longer from a warm epoch is skipped)",
    )
    parser.add_argument(
        "--naive-rows", type=int, default=argparse.SUPPRESS, help="grid rows of the article's loop to time (default: 2)"
    )
    parser.add_argument(
        "--model",
        nargs="*",
        metavar="NAME",
        help="time these model cases instead of the seed problem, against loss-landscapes and a per-point loop "
        f"(no name: all of {', '.join(BENCH_MODELS)})",
    )
    parser.add_argument(
        "--basins",
        action="store_true",
        help="time the seed's basin map (SGD from every start of a grid over [-2, 2)^2) instead, against the "
        "article's training loop and a loop of train_sgd, both on the CPU and extrapolated",
    )
    parser.add_argument(
        "--grid",
        type=int,
        default=argparse.SUPPRESS,
        help="with --model: points per axis of the plane (default: 41); with --basins: starts per axis (default: 200)",
    )
    parser.add_argument(
        "--epochs", type=int, default=argparse.SUPPRESS, help="with --basins: epochs of every run (default: 25)"
    )
    parser.add_argument(
        "--samples", type=int, default=argparse.SUPPRESS, help="with --model: samples of each case (default: 2000)"
    )
    parser.add_argument("--json", help="also write everything to this JSON file")


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Check every flag, time every case, print the table (and write the JSON)."""
    import torch

    from fastsurface._support.devices import resolve_device

    output = check_writable("--json", arguments.json, (".json",)) if arguments.json else None
    names = arguments.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = list(dict.fromkeys(resolve_device(name) for name in names))
    check_positive_int("--repeats", arguments.repeats)
    if not 0 < arguments.max_seconds < math.inf:
        raise FastsurfaceError(f"`--max-seconds` must be a finite number > 0, got {arguments.max_seconds}")
    mode = _mode(arguments)
    timing = {"repeats": arguments.repeats, "max_seconds": arguments.max_seconds}
    if mode == "seed":
        result = _seed_bench(devices, **_flags(arguments, _DEFAULTS[mode]), **timing)
    elif mode == "model":
        from fastsurface.model_bench import format_model_table, run_model_bench

        flags = _flags(arguments, _DEFAULTS[mode])
        result = run_model_bench(arguments.model or BENCH_MODELS, devices, **flags, **timing)
        print(format_model_table(result))
    else:
        from fastsurface.basin_bench import format_basin_table, run_basin_bench

        result = run_basin_bench(devices, **_flags(arguments, _DEFAULTS[mode]), **timing)
        print(format_basin_table(result))
    if output is not None:
        atomic_write_text(output, json.dumps(result, indent=2))
        print(f"wrote {output}")
    return ExitCode.OK


def _mode(arguments: argparse.Namespace) -> str:
    """``"seed"``, ``"model"`` or ``"basins"``, once no flag of another mode was given."""
    if arguments.basins and arguments.model is not None:
        raise FastsurfaceError("`--basins` and `--model` are separate modes; give one of them")
    mode = "basins" if arguments.basins else "model" if arguments.model is not None else "seed"
    for name in sorted(set().union(*_DEFAULTS.values()) - set(_DEFAULTS[mode])):
        if name in vars(arguments):
            applies = " or ".join(_MODES[other] for other in _DEFAULTS if name in _DEFAULTS[other])
            raise FastsurfaceError(f"`--{name.replace('_', '-')}` applies only {applies}")
    return mode


def _flags(arguments: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """The values of the flags named in ``defaults``: given, or their defaults."""
    return {name: vars(arguments).get(name, default) for name, default in defaults.items()}


def _seed_bench(
    devices: list[torch.device],
    steps: list[float],
    methods: list[Method],
    naive_rows: int,
    repeats: int,
    max_seconds: float,
) -> dict[str, Any]:
    """Check the seed bench's own flags, run it and print its table."""
    from fastsurface.seed.bench import format_table, run_bench

    for step in steps:
        fs.axis(-2, 2, step)
    check_positive_int("--naive-rows", naive_rows)
    rows = len(fs.axis(-2, 2, 0.05))
    if naive_rows > rows:
        raise FastsurfaceError(f"`--naive-rows` must be at most the seed grid's {rows}, got {naive_rows}")
    result = run_bench(devices, steps, tuple(methods), repeats, max_seconds, naive_rows)
    print(format_table(result))
    return result


COMMAND = _shared.Command(
    name="bench",
    summary="time every path on every device against the article's loop",
    description="Time the seed problem (2,000 test samples) on every available device and path at several "
    "grid steps over [-2, 2), against the article's loop and the device's tanh throughput, in one table. "
    "With --model: MLPs and a small CNN on a random plane, against loss-landscapes 3.0.6 and a per-point loop, "
    "with GFLOP/s and the fractions of this machine's sgemm and activation throughput. "
    "With --basins: the seed's basin map (train_many and basin_map, 200 x 200 starts, 25 epochs) against the "
    "article's training loop and a loop of train_sgd, with the device's tanh throughput and peak memory.",
    declare=declare,
    handle=handle,
)
