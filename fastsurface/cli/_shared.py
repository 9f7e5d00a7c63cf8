"""What the commands share: the parser class, the command declaration, the flag groups of the
seed problem, and the helpers that turn flags into library calls and results into report lines.

Only what ``--help`` needs is imported at the top. The machinery a command runs (numpy, torch,
plotly, storage, the distributed runner, the benchmark) is reached when a handler runs: public
names through ``fastsurface`` (``fs.loss_surface``), internals imported in the function that
uses them.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import fastsurface as fs
from fastsurface._support.choices import METHODS
from fastsurface._support.files import check_writable
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError, check_seed

if TYPE_CHECKING:
    import numpy as np

    from fastsurface import ANN, Surface

# Library argument names that differ from the flag they come from.
_LIBRARY_NAMES = {
    "n": "samples",
    "trajectory": "fit_trajectory",
    "train": "train_data",
    "iterations": "hessian_iterations",
}


class Parser(argparse.ArgumentParser):
    """Reports bad arguments on one line, like every other fastsurface error, and reads
    ``-1e20`` as a number (argparse's own rule takes it for an option)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.ERROR, f"fastsurface: error: {message} (see `{self.prog} --help`)\n")


FlagGroup = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One subcommand as data: its help, its flags and the handler that runs it."""

    name: str
    summary: str  # its line in `fastsurface --help`
    description: str  # the head of `fastsurface NAME --help`
    declare: FlagGroup  # adds the command's own flags, after its flag groups
    handle: Callable[[argparse.Namespace], ExitCode]
    flag_groups: tuple[FlagGroup, ...] = ()
    formatter_class: type[argparse.HelpFormatter] = argparse.ArgumentDefaultsHelpFormatter


def add_grid_flags(parser: argparse.ArgumentParser) -> None:
    """``--w1``, ``--w2`` and ``--step``: the grid over the seed model's two weights."""
    parser.add_argument(
        "--w1", nargs=2, type=float, default=(-2.0, 2.0), metavar=("START", "STOP"), help="w1 range, stop excluded"
    )
    parser.add_argument(
        "--w2", nargs=2, type=float, default=(-2.0, 2.0), metavar=("START", "STOP"), help="w2 range, stop excluded"
    )
    parser.add_argument("--step", type=float, default=0.05, help="grid step on both axes")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """The seed data set and its train/test split."""
    parser.add_argument("--samples", type=int, default=10_000, help="data set size")
    parser.add_argument("--seed", type=int, default=42, help="seed of the data (the article's 42)")
    parser.add_argument(
        "--test-size", type=_fraction_or_count, default=0.2, help="test fraction (0 < f < 1) or test sample count"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """How the loss is evaluated: batches, reduction, device, dtype and method."""
    parser.add_argument(
        "--batch-size", type=int, default=64, help="training batch size and batch_mean's test batch size"
    )
    parser.add_argument("--reduction", choices=("mean", "batch_mean"), default="mean", help="test loss reduction")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="compute dtype")
    parser.add_argument("--method", choices=METHODS, default="auto", help="surface evaluation path")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--save`` and the progress bars."""
    parser.add_argument("--save", help="also save the results, with their provenance, to this .npz file")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=sys.stderr.isatty(),
        help="show progress bars (default: when stderr is a terminal)",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


# The flags of the commands that evaluate the seed problem, in their order in --help.
SEED_PROBLEM_FLAGS = (add_grid_flags, add_data_flags, add_evaluation_flags, add_output_flags)


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


def as_flags(message: str, arguments: argparse.Namespace) -> str:
    """``message`` with the library's argument names (`` `batch_size` ``) written as this
    command's flags (`` `--batch-size` ``)."""
    names = {name: name for name in vars(arguments)} | _LIBRARY_NAMES
    for name, option in names.items():
        if option in vars(arguments) and option != "path":
            message = message.replace(f"`{name}`", f"`--{option.replace('_', '-')}`")
    return message


@dataclass(frozen=True)
class SeedProblem:
    """The seed article's problem as the flags set it."""

    w1: np.ndarray  # the grid's first axis, float64, shape (n1,)
    w2: np.ndarray  # the grid's second axis, float64, shape (n2,)
    train: tuple[np.ndarray, np.ndarray]  # (x, y), float64, each shape (train samples,)
    test: tuple[np.ndarray, np.ndarray]  # (x, y), float64, each shape (test samples,)
    model: ANN  # the article's two-weight network, fresh


def seed_problem(arguments: argparse.Namespace) -> SeedProblem:
    """The grid, the data split and the model of the seed problem flags, checked in that order."""
    w1, w2 = grid_axes(arguments)
    train, test = seed_split(arguments)
    return SeedProblem(w1, w2, train, test, fs.ANN(1, 1, 1))


def grid_axes(arguments: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The two axes; each needs two values for a surface to draw or save."""
    for name in ("w1", "w2"):
        start, stop = getattr(arguments, name)  # argparse: nargs=2
        if not (math.isfinite(start) and math.isfinite(stop) and start < stop):
            raise FastsurfaceError(f"`--{name}` must be finite START < STOP, got {start:g} {stop:g}")
    (w1_start, w1_stop), (w2_start, w2_stop) = arguments.w1, arguments.w2
    axes = fs.axis(w1_start, w1_stop, arguments.step), fs.axis(w2_start, w2_stop, arguments.step)
    for name, values, bounds in zip(("w1", "w2"), axes, (arguments.w1, arguments.w2), strict=True):
        if len(values) < 2:
            raise FastsurfaceError(
                f"`--step` of {arguments.step:g} leaves {len(values)} value in {name}'s range "
                f"[{bounds[0]:g}, {bounds[1]:g}); a surface needs at least 2 per axis"
            )
    return axes


def save_path(arguments: argparse.Namespace) -> Path | None:
    """``--save``'s file, checked before any work; ``None`` without ``--save``."""
    return None if arguments.save is None else check_writable("--save", arguments.save, (".npz",))


def seed_split(arguments: argparse.Namespace) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The seed data set, split into ``(train, test)`` pairs of ``(x, y)``."""
    for name in ("seed", "split_seed", "train_seed"):  # one library name, `seed`, for three flags
        if name in vars(arguments):
            check_seed(f"--{name.replace('_', '-')}", getattr(arguments, name))
    x, y = fs.piecewise_dataset(arguments.samples, seed=arguments.seed)
    return fs.train_test_split(x, y, test_size=arguments.test_size, seed=arguments.split_seed)


def evaluation_options(arguments: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments that training and the engine share, each named as its flag."""
    return {name: getattr(arguments, name) for name in ("reduction", "batch_size", "device", "dtype", "progress")}


def surface_options(arguments: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``loss_surface``."""
    return {**evaluation_options(arguments), "method": arguments.method}


def provenance(arguments: argparse.Namespace) -> dict[str, object]:
    """The command's arguments, which with the package versions reproduce the file."""
    return {name: value for name, value in vars(arguments).items() if name not in ("handler", "progress")}


def surface_lines(surface: Surface) -> list[str]:
    """Grid, evaluation, best point (named by its metric) and any non-finite values of ``surface``."""
    import numpy as np

    n1, n2 = surface.loss.shape
    lines = [
        f"grid      {n1} x {n2} = {n1 * n2:,} points, {surface.labels[0]} in {span(surface.w1)}, "
        f"{surface.labels[1]} in {span(surface.w2)}",
        f"surface   {surface.samples:,} test samples, {surface.reduction} {surface.metric}, "
        f"{surface.device} {surface.dtype}, "
        f"method {surface.method}: "
        + (f"{surface.seconds:.3f} s" if np.isfinite(surface.seconds) else "time not recorded in the file"),
    ]
    finite = np.isfinite(surface.loss)
    if finite.any():
        a, b, best = surface.best()
        way = "highest" if surface.higher_is_better else "lowest"
        lines.append(
            f"{way:<10}{surface.metric} {best:.6g} at {surface.labels[0]}={a:.4g}, {surface.labels[1]}={b:.4g} "
            "(grid point)"
        )
    if not finite.all():
        nan = int(np.isnan(surface.loss).sum())
        lines.append(
            f"warning   {finite.size - finite.sum():,} of {finite.size:,} losses are not finite ({nan:,} NaN, "
            f"{finite.size - finite.sum() - nan:,} inf: overflow in {surface.dtype}?); they are kept as such "
            "and left out of figures"
        )
    return lines


def span(values: np.ndarray) -> str:
    """``[min, max]`` of ``values``, to four digits."""
    return f"[{values.min():.4g}, {values.max():.4g}]"
