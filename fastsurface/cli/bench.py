"""``fastsurface bench``: every method on every device against the article's loop, in one table."""

from __future__ import annotations

import argparse
import json
import math

import fastsurface as fs
from fastsurface._support.choices import BENCH_METHODS
from fastsurface._support.files import atomic_write_text, check_writable
from fastsurface.cli import _shared
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError, check_positive_int


def declare(parser: argparse.ArgumentParser) -> None:
    """Devices, grid steps, methods and the time allowed."""
    parser.add_argument("--device", action="append", help="cpu, cuda or cuda:N; repeat for several (default: all)")
    parser.add_argument("--steps", nargs="+", type=float, default=[0.05, 0.01, 0.001], help="grid steps")
    parser.add_argument("--methods", nargs="+", choices=BENCH_METHODS, default=list(BENCH_METHODS), help="engine paths")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (the median is reported)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="skip cases estimated to take longer")
    parser.add_argument("--naive-rows", type=int, default=2, help="grid rows of the article's loop to time")
    parser.add_argument("--json", help="also write everything to this JSON file")


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Check every flag, time every case, print the table (and write the JSON)."""
    import torch

    from fastsurface._support.devices import resolve_device
    from fastsurface.seed.bench import format_table, run_bench

    output = check_writable("--json", arguments.json, (".json",)) if arguments.json else None
    names = arguments.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = list(dict.fromkeys(resolve_device(name) for name in names))
    for step in arguments.steps:
        fs.axis(-2, 2, step)
    for name in ("repeats", "naive_rows"):
        check_positive_int(f"--{name.replace('_', '-')}", getattr(arguments, name))
    rows = len(fs.axis(-2, 2, 0.05))
    if arguments.naive_rows > rows:
        raise FastsurfaceError(f"`--naive-rows` must be at most the seed grid's {rows}, got {arguments.naive_rows}")
    if not 0 < arguments.max_seconds < math.inf:
        raise FastsurfaceError(f"`--max-seconds` must be a finite number > 0, got {arguments.max_seconds}")
    result = run_bench(
        devices,
        arguments.steps,
        tuple(arguments.methods),
        arguments.repeats,
        arguments.max_seconds,
        arguments.naive_rows,
    )
    print(format_table(result))
    if output is not None:
        atomic_write_text(output, json.dumps(result, indent=2))
        print(f"wrote {output}")
    return ExitCode.OK


COMMAND = _shared.Command(
    name="bench",
    summary="time every path on every device against the article's loop",
    description="Time the seed problem (2,000 test samples) on every available device and path at several "
    "grid steps over [-2, 2), against the article's loop and the device's tanh throughput, in one table.",
    declare=declare,
    handle=handle,
)
