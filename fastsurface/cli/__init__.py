"""The ``fastsurface`` command line: ``run`` draws the seed article's figure, ``surface`` computes a
resumable surface, ``show`` prints a saved file."""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import plotly.graph_objects as go
import torch

from fastsurface._support.devices import resolve_device
from fastsurface._support.files import all_or_nothing, atomic_write_text, check_writable
from fastsurface._support.memory import check_figure_fits
from fastsurface.analysis.critical import critical_points
from fastsurface.analysis.training import train_sgd
from fastsurface.engine.axes import MAX_AXIS_VALUES, axis
from fastsurface.engine.evaluate import loss_surface
from fastsurface.engine.options import METHODS
from fastsurface.errors import FastsurfaceError, check_positive_int, check_seed
from fastsurface.planes.plane import default_plane
from fastsurface.results import CriticalPoint, Surface, Trajectory
from fastsurface.runs.distributed import SHARDS, current_world, sharded_loss_surface
from fastsurface.runs.storage import load, save
from fastsurface.seed.bench import BENCH_METHODS, format_table, run_bench
from fastsurface.seed.data import piecewise_dataset, train_test_split
from fastsurface.seed.model import ANN
from fastsurface.views.export import check_export, write_figure
from fastsurface.views.planar import plot_animation, plot_contour
from fastsurface.views.surface import plot_surface

# Share of a range added on each side when --fit-trajectory widens the grid.
_FIT_MARGIN = 0.05
# --view names and the figure each draws from (surface, path, critical points, log colouring).
VIEWS: dict[str, Callable[[Surface, Trajectory, list[CriticalPoint], bool], go.Figure]] = {
    "surface": lambda s, path, points, log: plot_surface(s, path, critical_points=points, log_color=log),
    "contour": lambda s, path, points, log: plot_contour(s, path, points, log_color=log),
    "heatmap": lambda s, path, points, log: plot_contour(s, path, points, kind="heatmap", log_color=log),
    "animation": lambda s, path, points, log: plot_animation(s, path, points, log_color=log),
}
_SUFFIXES = {"html": (".html", ".htm"), "png": (".png",), "svg": (".svg",)}
# Library argument names that differ from the flag they come from.
_LIBRARY_NAMES = {"n": "samples"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsurface`` command; returns the exit status."""
    arguments = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    try:
        return arguments.handler(arguments)
    except FastsurfaceError as error:
        print(f"fastsurface: error: {_as_flags(str(error), arguments)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = " (finished checkpoint blocks are kept: run the same command to resume)"
        print(
            f"fastsurface: interrupted; no output was written{kept if _uses_checkpoints(arguments) else ''}",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _as_flags(message: str, arguments: argparse.Namespace) -> str:
    """``message`` with the library's argument names (`` `batch_size` ``) written as this
    command's flags (`` `--batch-size` ``)."""
    names = {name: name for name in vars(arguments)} | _LIBRARY_NAMES
    for name, option in names.items():
        if option in vars(arguments) and option != "path":
            message = message.replace(f"`{name}`", f"`--{option.replace('_', '-')}`")
    return message


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _uses_checkpoints(arguments: argparse.Namespace) -> bool:
    return getattr(arguments, "checkpoint_dir", None) is not None


class _Parser(argparse.ArgumentParser):
    """Reports bad arguments on one line, like every other fastsurface error, and reads
    ``-1e20`` as a number (argparse's own rule takes it for an option)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fastsurface: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastsurface", description="Fast loss surfaces of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = _shared_arguments()
    run = commands.add_parser(
        "run",
        parents=[shared],
        help="the seed article end to end: data, SGD, loss surface, HTML figure",
        description="Train the seed article's two-weight network with SGD, evaluate its test loss on a "
        "w1 x w2 grid and write an interactive HTML figure of the surface with the SGD path.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--fit-trajectory", action="store_true", help="widen the grid to cover the whole SGD path")
    run.add_argument("--lr", type=float, default=1e-2, help="SGD learning rate")
    run.add_argument("--epochs", type=int, default=25, help="SGD epochs")
    run.add_argument("--train-seed", type=int, default=0, help="seed of the training batches' shuffling")
    run.add_argument(
        "--record", choices=("epoch", "step"), default="epoch", help="record the path per epoch or per step"
    )
    run.add_argument(
        "--view",
        type=_views,
        default=("surface",),
        help=f"comma-separated figures to write, of {', '.join(VIEWS)}; with several, each file's name "
        "gets the view's name, e.g. loss_surface-contour.html",
    )
    run.add_argument(
        "--critical-points", action="store_true", help="find minima, maxima and saddles; list and mark them"
    )
    run.add_argument("--log-color", action="store_true", help="colour the surface by log10(loss)")
    run.add_argument(
        "--format", choices=tuple(_SUFFIXES), default="html", help="interactive HTML, or static PNG/SVG (kaleido)"
    )
    run.add_argument("--output", default=None, help="file to write (default: loss_surface.FORMAT)")
    run.add_argument(
        "--plotlyjs",
        choices=("embed", "cdn"),
        default="embed",
        help="embed plotly.js (works offline) or load it from a CDN",
    )
    run.set_defaults(handler=_run)
    surface = commands.add_parser(
        "surface",
        parents=[shared],
        help="the seed problem's test-loss surface, resumable, saved to a .npz file",
        description="Evaluate the seed article's test loss on a w1 x w2 grid, in blocks of rows that are "
        "checkpointed with --checkpoint-dir (run the same command again to resume), and save it with --save.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    surface.add_argument(
        "--shard",
        choices=SHARDS,
        default="auto",
        help="under torchrun: split the grid's blocks or the data among ranks",
    )
    surface.add_argument("--checkpoint-dir", help="folder for finished blocks; a rerun resumes from them")
    surface.add_argument("--block-rows", type=int, help="grid rows per checkpointed block (default: ~65,536 points)")
    surface.add_argument("--keep-checkpoint", action="store_true", help="keep the block files after success")
    surface.set_defaults(handler=_surface)
    show = commands.add_parser(
        "show",
        help="print what a saved .npz file holds",
        description="Verify a file written by --save (or fastsurface.save) and print its contents and provenance.",
    )
    show.add_argument("path", help="the .npz file")
    show.set_defaults(handler=_show)
    _add_bench(commands)
    from fastsurface.cli import basins  # it imports this module's helpers: loaded once they exist

    basins.add_parser(commands, shared)
    return parser


def _shared_arguments() -> _Parser:
    """Grid, data, evaluation and output arguments of `run` and `surface`."""
    shared = _Parser(add_help=False)
    shared.add_argument(
        "--w1", nargs=2, type=float, default=(-2.0, 2.0), metavar=("START", "STOP"), help="w1 range, stop excluded"
    )
    shared.add_argument(
        "--w2", nargs=2, type=float, default=(-2.0, 2.0), metavar=("START", "STOP"), help="w2 range, stop excluded"
    )
    shared.add_argument("--step", type=float, default=0.05, help="grid step on both axes")
    shared.add_argument("--samples", type=int, default=10_000, help="data set size")
    shared.add_argument("--seed", type=int, default=42, help="seed of the data (the article's 42)")
    shared.add_argument(
        "--test-size", type=_fraction_or_count, default=0.2, help="test fraction (0 < f < 1) or test sample count"
    )
    shared.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    shared.add_argument(
        "--batch-size", type=int, default=64, help="training batch size and batch_mean's test batch size"
    )
    shared.add_argument("--reduction", choices=("mean", "batch_mean"), default="mean", help="test loss reduction")
    shared.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    shared.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="compute dtype")
    shared.add_argument("--method", choices=METHODS, default="auto", help="surface evaluation path")
    shared.add_argument("--save", help="also save the results, with their provenance, to this .npz file")
    progress = shared.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=sys.stderr.isatty(),
        help="show progress bars (default: when stderr is a terminal)",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    return shared


def _add_bench(commands: argparse._SubParsersAction[_Parser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="time every path on every device against the article's loop",
        description="Time the seed problem (2,000 test samples) on every available device and path at several "
        "grid steps over [-2, 2), against the article's loop and the device's tanh throughput, in one table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--device", action="append", help="cpu, cuda or cuda:N; repeat for several (default: all)")
    bench.add_argument("--steps", nargs="+", type=float, default=[0.05, 0.01, 0.001], help="grid steps")
    bench.add_argument(
        "--methods", nargs="+", choices=BENCH_METHODS, default=list(BENCH_METHODS), help="engine methods"
    )
    bench.add_argument("--repeats", type=int, default=3, help="timed runs per case (the median is reported)")
    bench.add_argument("--max-seconds", type=float, default=60.0, help="skip cases estimated to take longer")
    bench.add_argument("--naive-rows", type=int, default=2, help="grid rows of the article's loop to time")
    bench.add_argument("--json", help="also write everything to this JSON file")
    bench.set_defaults(handler=_bench)


def _bench(arguments: argparse.Namespace) -> int:
    output = check_writable("--json", arguments.json, (".json",)) if arguments.json else None
    names = arguments.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = list(dict.fromkeys(resolve_device(name) for name in names))
    for step in arguments.steps:
        axis(-2, 2, step)
    for name in ("repeats", "naive_rows"):
        check_positive_int(f"--{name.replace('_', '-')}", getattr(arguments, name))
    rows = len(axis(-2, 2, 0.05))
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
    return 0


def _run(arguments: argparse.Namespace) -> int:
    outputs = _outputs(arguments)
    saved = _save_path(arguments)
    first, second = _grid(arguments)
    train, test = _seed_split(arguments)
    common = _evaluation_options(arguments)
    model = ANN(1, 1, 1)
    path = train_sgd(
        model,
        train,
        test,
        lr=arguments.lr,
        epochs=arguments.epochs,
        seed=arguments.train_seed,
        record=arguments.record,
        **common,
    )
    if arguments.fit_trajectory:
        first, second = _fit(first, path.w1, arguments.step), _fit(second, path.w2, arguments.step)
    check_figure_fits(len(first) * len(second), "--fit-trajectory" if arguments.fit_trajectory else "--step")
    surface = loss_surface(model, test, first, second, **_surface_options(arguments))
    points = []
    if arguments.critical_points:
        points = critical_points(
            surface, model, test, batch_size=arguments.batch_size, device=arguments.device, dtype="float64"
        )
    published: list[Path] = []
    try:
        with all_or_nothing() as published:  # an interrupted run leaves every output as it was
            for view, output in outputs.items():
                figure = VIEWS[view](surface, path, points, arguments.log_color)
                write_figure(figure, output, plotlyjs=arguments.plotlyjs)
            if saved is not None:
                plane = default_plane(model)
                save(saved, surface=surface, trajectory=path, plane=plane, provenance=_provenance(arguments))
    except KeyboardInterrupt:
        if not published:
            raise
        print(f"fastsurface: interrupted after writing {', '.join(map(str, published))}", file=sys.stderr)
        return 130
    written = [str(output) for output in outputs.values()] + ([str(saved)] if saved else [])
    print(_summary(surface, path, arguments, points, written))
    return 0


def _fraction_or_count(text: str) -> float | int:
    """``--test-size``: an integer is a count of samples, anything else a fraction."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fraction in (0, 1) or a count of samples, got {text!r}") from None


def _views(text: str) -> tuple[str, ...]:
    """``--view``'s comma-separated names, checked, in order, without repeats."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in VIEWS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VIEWS)}; got {text!r}")
    return names


def _outputs(arguments: argparse.Namespace) -> dict[str, Path]:
    """The file of each view, checked before any work."""
    output = Path(arguments.output or f"loss_surface.{arguments.format}")
    check_writable("--output", output, _SUFFIXES[arguments.format])
    if len(arguments.view) == 1:
        paths = {arguments.view[0]: output}
    else:
        paths = {view: output.with_name(f"{output.stem}-{view}{output.suffix}") for view in arguments.view}
    return {view: check_export("--output", path, arguments.plotlyjs) for view, path in paths.items()}


def _surface(arguments: argparse.Namespace) -> int:
    saved = _save_path(arguments)
    if arguments.keep_checkpoint and arguments.checkpoint_dir is None:
        raise FastsurfaceError("`--keep-checkpoint` keeps checkpointed blocks; it needs `--checkpoint-dir`")
    first, second = _grid(arguments)
    _, test = _seed_split(arguments)
    model = ANN(1, 1, 1)
    run = sharded_loss_surface(
        model,
        test,
        first,
        second,
        shard=arguments.shard,
        block_rows=arguments.block_rows,
        checkpoint_dir=arguments.checkpoint_dir,
        keep=arguments.keep_checkpoint,
        **_surface_options(arguments),
    )
    if current_world().rank != 0:  # rank 0 writes and reports for the whole job
        return 0
    reused = f", {run.blocks - run.computed} reused from {arguments.checkpoint_dir}" if arguments.checkpoint_dir else ""
    lines = [f"shards    {run.shard} sharding over {run.ranks} rank(s), {run.blocks} block(s){reused}"]
    if saved is not None:
        save(saved, surface=run.surface, plane=default_plane(model), provenance=_provenance(arguments))
        lines.append(f"wrote     {saved}")
    print("\n".join(_surface_lines(run.surface) + lines))
    return 0


def _show(arguments: argparse.Namespace) -> int:
    stored = load(arguments.path)
    metadata = stored.metadata
    lines = [f"file      {arguments.path}: fastsurface format {metadata['format_version']}, content verified"]
    if stored.surface is not None:
        lines += _surface_lines(stored.surface)
    if stored.trajectory is not None:
        path = stored.trajectory
        lines.append(
            f"path      {len(path.loss)} points ({path.record}), {path.reduction} loss "
            f"{path.loss[0]:.6g} -> {path.loss[-1]:.6g}"
        )
    if stored.plane is not None:
        lines.append(f"plane     {', '.join(stored.plane.labels)} over {', '.join(stored.plane.origin)}")
    facts = [f"{key} = {value}" for key, value in sorted(metadata["provenance"].items())]
    lines += ["provenance", *(f"{'':<10}{fact}" for fact in facts)] if facts else []
    print("\n".join(lines))
    return 0


def _grid(arguments: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The two axes; each needs two values for a surface to draw or save."""
    for name in ("w1", "w2"):
        start, stop = getattr(arguments, name)  # argparse: nargs=2
        if not (math.isfinite(start) and math.isfinite(stop) and start < stop):
            raise FastsurfaceError(f"`--{name}` must be finite START < STOP, got {start:g} {stop:g}")
    (w1_start, w1_stop), (w2_start, w2_stop) = arguments.w1, arguments.w2
    axes = axis(w1_start, w1_stop, arguments.step), axis(w2_start, w2_stop, arguments.step)
    for name, values, span in zip(("w1", "w2"), axes, (arguments.w1, arguments.w2), strict=True):
        if len(values) < 2:
            raise FastsurfaceError(
                f"`--step` of {arguments.step:g} leaves {len(values)} value in {name}'s range "
                f"[{span[0]:g}, {span[1]:g}); a surface needs at least 2 per axis"
            )
    return axes


def _save_path(arguments: argparse.Namespace) -> Path | None:
    return None if arguments.save is None else check_writable("--save", arguments.save, (".npz",))


def _seed_split(arguments: argparse.Namespace) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    for name in ("seed", "split_seed", "train_seed"):  # one library name, `seed`, for three flags
        if name in vars(arguments):
            check_seed(f"--{name.replace('_', '-')}", getattr(arguments, name))
    x, y = piecewise_dataset(arguments.samples, seed=arguments.seed)
    return train_test_split(x, y, test_size=arguments.test_size, seed=arguments.split_seed)


def _evaluation_options(arguments: argparse.Namespace) -> dict[str, Any]:
    return {
        "reduction": arguments.reduction,
        "batch_size": arguments.batch_size,
        "device": arguments.device,
        "dtype": arguments.dtype,
        "progress": arguments.progress,
    }


def _surface_options(arguments: argparse.Namespace) -> dict[str, Any]:
    return {**_evaluation_options(arguments), "method": arguments.method}


def _provenance(arguments: argparse.Namespace) -> dict[str, object]:
    """The command's arguments, which with the package versions reproduce the file."""
    return {name: value for name, value in vars(arguments).items() if name not in ("handler", "progress")}


def _fit(values: np.ndarray, path: np.ndarray, step: float) -> np.ndarray:
    """Extend an axis by whole steps (keeping its points) to cover ``path`` plus a margin."""
    margin = _FIT_MARGIN * (max(values[-1], path.max()) - min(values[0], path.min()))
    below = max(0, math.ceil((values[0] - (path.min() - margin)) / step))
    above = max(0, math.ceil((path.max() + margin - values[-1]) / step))
    if below + len(values) + above > MAX_AXIS_VALUES:
        raise FastsurfaceError(
            f"`--fit-trajectory`: the SGD path spans [{path.min():.3g}, {path.max():.3g}], which at `--step` "
            f"{step:g} needs more than the {MAX_AXIS_VALUES:,} values an axis may hold; lower `--lr` or raise `--step`"
        )
    return values[0] + step * np.arange(-below, len(values) + above, dtype=np.float64)


def _summary(
    surface: Surface, path: Trajectory, arguments: argparse.Namespace, points: list[CriticalPoint], outputs: list[str]
) -> str:
    lines = [
        *_surface_lines(surface),
        f"training  SGD lr={arguments.lr:g}, {arguments.epochs} epochs: ({path.w1[0]:.4g}, {path.w2[0]:.4g}) -> "
        f"({path.w1[-1]:.4g}, {path.w2[-1]:.4g}), test loss {path.loss[0]:.6g} -> {path.loss[-1]:.6g}",
    ]
    outside = _outside(surface, path)
    if outside:
        lines.append(
            f"note      the SGD path leaves the grid ({outside}); --fit-trajectory widens the grid to cover it"
        )
    if arguments.critical_points:
        lines.append(f"critical  {len(points)} point(s) inside the grid" + (":" if points else ""))
        lines.extend(
            f"          {p.kind:<10} loss {p.loss:.6g} at {surface.labels[0]}={p.w1:.6g}, "
            f"{surface.labels[1]}={p.w2:.6g}, eigenvalues {p.eigenvalues[0]:.3g}, {p.eigenvalues[1]:.3g}"
            for p in points
        )
    lines += [f"wrote     {output}" for output in outputs]
    return "\n".join(lines)


def _surface_lines(surface: Surface) -> list[str]:
    """Grid, evaluation, lowest point and any non-finite losses of ``surface``."""
    n1, n2 = surface.loss.shape
    lines = [
        f"grid      {n1} x {n2} = {n1 * n2:,} points, {surface.labels[0]} in {_span(surface.w1)}, "
        f"{surface.labels[1]} in {_span(surface.w2)}",
        f"surface   {surface.samples:,} test samples, {surface.reduction} loss, {surface.device} {surface.dtype}, "
        f"method {surface.method}: {surface.seconds:.3f} s",
    ]
    finite = np.isfinite(surface.loss)
    if finite.any():
        a, b, lowest = surface.argmin()
        lines.append(
            f"lowest    loss {lowest:.6g} at {surface.labels[0]}={a:.4g}, {surface.labels[1]}={b:.4g} (grid point)"
        )
    if not finite.all():
        nan = int(np.isnan(surface.loss).sum())
        lines.append(
            f"warning   {finite.size - finite.sum():,} of {finite.size:,} losses are not finite ({nan:,} NaN, "
            f"{finite.size - finite.sum() - nan:,} inf: overflow in {surface.dtype}?); they are kept as such "
            "and left out of figures"
        )
    return lines


def _outside(surface: Surface, path: Trajectory) -> str:
    reports = []
    for label, values, coordinates in (
        (surface.labels[0], surface.w1, path.w1),
        (surface.labels[1], surface.w2, path.w2),
    ):
        if coordinates.min() < values[0] or coordinates.max() > values[-1]:
            reports.append(f"{label} spans {_span(coordinates)}, grid {_span(values)}")
    return "; ".join(reports)


def _span(values: np.ndarray) -> str:
    return f"[{values.min():.4g}, {values.max():.4g}]"
