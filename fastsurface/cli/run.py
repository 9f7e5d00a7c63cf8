"""``fastsurface run``: the seed article end to end: data, SGD, loss surface, figures."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastsurface as fs
from fastsurface._support.files import all_or_nothing, check_writable
from fastsurface.cli import _shared
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError

if TYPE_CHECKING:
    import numpy as np
    import plotly.graph_objects as go

    from fastsurface import CriticalPoint, Surface, Trajectory

# Share of a range added on each side when --fit-trajectory widens the grid.
_FIT_MARGIN = 0.05
# --view names and the figure each draws from (surface, path, critical points, log colouring).
VIEWS: dict[str, Callable[[Surface, Trajectory, list[CriticalPoint], bool], go.Figure]] = {
    "surface": lambda s, path, points, log: fs.plot_surface(s, path, critical_points=points, log_color=log),
    "contour": lambda s, path, points, log: fs.plot_contour(s, path, points, log_color=log),
    "heatmap": lambda s, path, points, log: fs.plot_contour(s, path, points, kind="heatmap", log_color=log),
    "animation": lambda s, path, points, log: fs.plot_animation(s, path, points, log_color=log),
}
_SUFFIXES = {"html": (".html", ".htm"), "png": (".png",), "svg": (".svg",)}


def declare(parser: argparse.ArgumentParser) -> None:
    """The flags of ``run`` beyond the seed problem's: training, figures and their files."""
    parser.add_argument("--fit-trajectory", action="store_true", help="widen the grid to cover the whole SGD path")
    parser.add_argument("--lr", type=float, default=1e-2, help="SGD learning rate")
    parser.add_argument("--epochs", type=int, default=25, help="SGD epochs")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the training batches' shuffling")
    parser.add_argument(
        "--record", choices=("epoch", "step"), default="epoch", help="record the path per epoch or per step"
    )
    parser.add_argument(
        "--view",
        type=_views,
        default=("surface",),
        help=f"comma-separated figures to write, of {', '.join(VIEWS)}; with several, each file's name "
        "gets the view's name, e.g. loss_surface-contour.html",
    )
    parser.add_argument(
        "--critical-points", action="store_true", help="find minima, maxima and saddles; list and mark them"
    )
    parser.add_argument("--log-color", action="store_true", help="colour the surface by log10(loss)")
    parser.add_argument(
        "--format", choices=tuple(_SUFFIXES), default="html", help="interactive HTML, or static PNG/SVG (kaleido)"
    )
    parser.add_argument("--output", default=None, help="file to write (default: loss_surface.FORMAT)")
    parser.add_argument(
        "--plotlyjs",
        choices=("embed", "cdn"),
        default="embed",
        help="embed plotly.js (works offline) or load it from a CDN",
    )


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Train, evaluate, draw; every output is written, or none."""
    from fastsurface._support.memory import check_figure_fits

    outputs = _outputs(arguments)
    saved = _shared.save_path(arguments)
    problem = _shared.seed_problem(arguments)
    path = fs.train_sgd(problem.model, problem.train, problem.test, **_training_options(arguments))
    first, second = problem.w1, problem.w2
    if arguments.fit_trajectory:
        first, second = _fit(first, path.w1, arguments.step), _fit(second, path.w2, arguments.step)
    check_figure_fits(len(first) * len(second), "--fit-trajectory" if arguments.fit_trajectory else "--step")
    surface = fs.loss_surface(problem.model, problem.test, first, second, **_shared.surface_options(arguments))
    points = []
    if arguments.critical_points:
        points = fs.critical_points(
            surface,
            problem.model,
            problem.test,
            batch_size=arguments.batch_size,
            device=arguments.device,
            dtype="float64",
        )
    published: list[Path] = []
    try:
        with all_or_nothing() as published:  # an interrupted run leaves every output as it was
            for view, output in outputs.items():
                figure = VIEWS[view](surface, path, points, arguments.log_color)
                fs.write_figure(figure, output, plotlyjs=arguments.plotlyjs)
            if saved is not None:
                plane = fs.default_plane(problem.model)
                fs.save(saved, surface=surface, trajectory=path, plane=plane, provenance=_shared.provenance(arguments))
    except KeyboardInterrupt:
        if not published:
            raise
        print(f"fastsurface: interrupted after writing {', '.join(map(str, published))}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    written = [str(output) for output in outputs.values()] + ([str(saved)] if saved else [])
    print(_summary(surface, path, arguments, points, written))
    return ExitCode.OK


COMMAND = _shared.Command(
    name="run",
    summary="the seed article end to end: data, SGD, loss surface, HTML figure",
    description="Train the seed article's two-weight network with SGD, evaluate its test loss on a "
    "w1 x w2 grid and write an interactive HTML figure of the surface with the SGD path.",
    declare=declare,
    handle=handle,
    flag_groups=_shared.SEED_PROBLEM_FLAGS,
)


def _views(text: str) -> tuple[str, ...]:
    """``--view``'s comma-separated names, checked, in order, without repeats."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in VIEWS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VIEWS)}; got {text!r}")
    return names


def _training_options(arguments: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``train_sgd``."""
    return {
        "lr": arguments.lr,
        "epochs": arguments.epochs,
        "seed": arguments.train_seed,
        "record": arguments.record,
        **_shared.evaluation_options(arguments),
    }


def _outputs(arguments: argparse.Namespace) -> dict[str, Path]:
    """The file of each view, checked before any work."""
    from fastsurface.views.export import check_export

    output = Path(arguments.output or f"loss_surface.{arguments.format}")
    check_writable("--output", output, _SUFFIXES[arguments.format])
    if len(arguments.view) == 1:
        paths = {arguments.view[0]: output}
    else:
        paths = {view: output.with_name(f"{output.stem}-{view}{output.suffix}") for view in arguments.view}
    return {view: check_export("--output", path, arguments.plotlyjs) for view, path in paths.items()}


def _fit(values: np.ndarray, path: np.ndarray, step: float) -> np.ndarray:
    """Extend an axis by whole steps (keeping its points) to cover ``path`` plus a margin."""
    import numpy as np

    from fastsurface.engine.axes import MAX_AXIS_VALUES

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
        *_shared.surface_lines(surface),
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


def _outside(surface: Surface, path: Trajectory) -> str:
    reports = []
    for label, values, coordinates in (
        (surface.labels[0], surface.w1, path.w1),
        (surface.labels[1], surface.w2, path.w2),
    ):
        if coordinates.min() < values[0] or coordinates.max() > values[-1]:
            reports.append(f"{label} spans {_shared.span(coordinates)}, grid {_shared.span(values)}")
    return "; ".join(reports)
