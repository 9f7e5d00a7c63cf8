"""``fastsurface run``: the seed article end to end: data, SGD, loss surface, figures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastsurface as fs
from fastsurface._support.files import all_or_nothing, check_writable
from fastsurface.cli import _models, _shared
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError

if TYPE_CHECKING:
    import numpy as np
    import plotly.graph_objects as go

    from fastsurface import CriticalPoint, Plane, Surface, Trajectory

# --view names and the figure each draws from (surface, path, critical points, log colouring); the 3-D
# surface is built as plain figure data (views.surface.surface_figure), skipping plotly's validators.
VIEWS: dict[str, Callable[[Surface, Trajectory, list[CriticalPoint], bool], go.Figure | dict[str, Any]]] = {
    "surface": lambda s, path, points, log: _surface_figure(s, path, critical_points=points, log_color=log),
    "contour": lambda s, path, points, log: fs.plot_contour(s, path, points, log_color=log),
    "heatmap": lambda s, path, points, log: fs.plot_contour(s, path, points, kind="heatmap", log_color=log),
    "animation": lambda s, path, points, log: fs.plot_animation(s, path, points, log_color=log),
}
_SUFFIXES = {"html": (".html", ".htm"), "png": (".png",), "svg": (".svg",)}


def declare(parser: argparse.ArgumentParser) -> None:
    """The flags of ``run`` beyond the seed problem's: training, figures and their files."""
    parser.add_argument(
        "--fit-trajectory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="grow the grid by whole steps to cover the whole SGD path (a window that holds it stays as it is)",
    )
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the training batches' shuffling")
    _models.add_training_flags(parser)
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
    if not _models.uses_seed(arguments):
        return _any_model(arguments, outputs, saved)
    problem = _shared.seed_problem(arguments)
    _check_critical_points(arguments, problem.w1, problem.w2)
    path = fs.train_sgd(problem.model, problem.train, problem.test, **_training_options(arguments))
    first, second = problem.w1, problem.w2
    if arguments.fit_trajectory:
        first, second = fs.fit_window(first, second, path, arguments.step)
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
    if _write(arguments, outputs, saved, surface, path, points, fs.default_plane(problem.model)):
        return ExitCode.INTERRUPTED
    written = [str(output) for output in outputs.values()] + ([str(saved)] if saved else [])
    print(_summary(surface, path, arguments, points, written))
    return ExitCode.OK


def _any_model(arguments: argparse.Namespace, outputs: dict[str, Path], saved: Path | None) -> ExitCode:
    """``run`` for ``--model``/``--data``/``--plane``: train with ``record_path``, build the
    plane at the trained weights, project the path onto it and evaluate the surface there."""
    from fastsurface._support.memory import check_figure_fits
    from fastsurface.engine import _stream as stream

    _models.check_plane_flags(arguments, "run")
    factory = _models.optimizer_factory(arguments)
    problem = _models.problem(arguments)
    _check_critical_points(arguments, problem.w1, problem.w2)
    stream.check_reusable("data", problem.test, 2, "by the surface and by the path's projection")
    options = _shared.evaluation_options(arguments)
    recorded = fs.record_path(
        problem.model,
        problem.train,
        optimizer=factory,
        epochs=arguments.epochs,
        record=arguments.record,
        loss=arguments.loss,
        batch_size=arguments.batch_size,
        seed=arguments.train_seed,
        device=arguments.device,
        dtype=arguments.dtype,
        progress=arguments.progress,
    )
    trained = recorded.model
    assert trained is not None  # record_path always returns its trained copy
    plane, described = _models.build_plane(arguments, trained, problem.test, recorded)
    projected = fs.project_path(trained, plane, recorded, problem.test, loss=arguments.loss, **options)
    path = projected.trajectory()
    first, second = problem.w1, problem.w2
    if arguments.fit_trajectory:
        first, second = fs.fit_window(first, second, path, arguments.step)
    check_figure_fits(len(first) * len(second), "--fit-trajectory" if arguments.fit_trajectory else "--step")
    surface = fs.loss_surface(
        trained, problem.test, first, second, plane=plane, loss=arguments.loss, **_shared.surface_options(arguments)
    )
    points = []
    if arguments.critical_points:
        points = fs.critical_points(
            surface,
            trained,
            problem.test,
            plane=plane,
            loss=arguments.loss,
            batch_size=arguments.batch_size,
            device=arguments.device,
            dtype="float64",
        )
    if _write(arguments, outputs, saved, surface, path, points, plane):
        return ExitCode.INTERRUPTED
    written = [str(output) for output in outputs.values()] + ([str(saved)] if saved else [])
    lines = [
        f"model     {problem.source}, {recorded.vectors.shape[1]:,} parameters",
        f"plane     {described}",
        f"training  {arguments.optimizer or 'sgd'} lr={arguments.lr:g}, {arguments.epochs} epochs, "
        f"{int(recorded.step[-1]):,} steps; on the plane: loss {path.loss[0]:.6g} -> {path.loss[-1]:.6g}, "
        f"path off the plane by up to {projected.relative_residual.max():.3g} (relative)",
    ]
    print("\n".join([*lines, _summary(surface, path, arguments, points, written, training=False)]))
    return ExitCode.OK


def _check_critical_points(arguments: argparse.Namespace, w1: np.ndarray, w2: np.ndarray) -> None:
    if arguments.critical_points and min(len(w1), len(w2)) < 3:
        raise FastsurfaceError(
            f"`--critical-points` needs at least 3 grid values per axis to find candidates, got "
            f"{len(w1)} x {len(w2)}; use a smaller `--step` or a wider window"
        )


def _write(
    arguments: argparse.Namespace,
    outputs: dict[str, Path],
    saved: Path | None,
    surface: Surface,
    path: Trajectory,
    points: list[CriticalPoint],
    plane: Plane,
) -> bool:
    """Write every figure and the ``--save`` file, or none; whether Ctrl-C cut it short
    after some were written (then it says which)."""
    published: list[Path] = []
    try:
        with all_or_nothing() as published:  # an interrupted run leaves every output as it was
            for view, output in outputs.items():
                figure = VIEWS[view](surface, path, points, arguments.log_color)
                fs.write_figure(figure, output, plotlyjs=arguments.plotlyjs)
            if saved is not None:
                fs.save(saved, surface=surface, trajectory=path, plane=plane, provenance=_shared.provenance(arguments))
    except KeyboardInterrupt:
        if not published:
            raise
        print(f"fastsurface: interrupted after writing {', '.join(map(str, published))}", file=sys.stderr)
        return True
    return False


COMMAND = _shared.Command(
    name="run",
    summary="a model end to end (the seed article's by default): data, training, loss surface, HTML figure",
    description="Train the seed article's two-weight network with SGD, evaluate its test loss on a "
    "w1 x w2 grid and write an interactive HTML figure of the surface with the SGD path. With --model and "
    "--data, the same for your own model: trained with --optimizer, its surface on --plane through the "
    "trained weights, with the training path projected onto it.",
    declare=declare,
    handle=handle,
    flag_groups=(*_shared.SEED_PROBLEM_FLAGS, _models.add_model_flags),
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

    output = Path(f"loss_surface.{arguments.format}" if arguments.output is None else arguments.output)
    check_writable("--output", output, _SUFFIXES[arguments.format])
    if len(arguments.view) == 1:
        paths = {arguments.view[0]: output}
    else:
        paths = {view: output.with_name(f"{output.stem}-{view}{output.suffix}") for view in arguments.view}
    return {view: check_export("--output", path, arguments.plotlyjs) for view, path in paths.items()}


def _summary(
    surface: Surface,
    path: Trajectory,
    arguments: argparse.Namespace,
    points: list[CriticalPoint],
    outputs: list[str],
    training: bool = True,
) -> str:
    lines = _shared.surface_lines(surface)
    if training:  # the seed's SGD line; a --model's is its own
        lines.append(
            f"training  SGD lr={arguments.lr:g}, {arguments.epochs} epochs: ({path.w1[0]:.4g}, {path.w2[0]:.4g}) -> "
            f"({path.w1[-1]:.4g}, {path.w2[-1]:.4g}), test loss {path.loss[0]:.6g} -> {path.loss[-1]:.6g}"
        )
    walk = "SGD path" if training else "training path"
    outside = _outside(surface, path)
    if outside:
        lines.append(
            f"note      the {walk} leaves the grid ({outside}); without --no-fit-trajectory it grows to cover it"
        )
    elif arguments.fit_trajectory:
        window = " x ".join(f"[{start:g}, {stop:g})" for start, stop in (arguments.w1, arguments.w2))
        given = _shared.grid_axes(arguments)
        axes = zip(surface.labels, given, (surface.w1, surface.w2), strict=True)
        grown = " and ".join(label for label, before, fitted in axes if len(fitted) > len(before))
        fit = f"grown along {grown} to cover the {walk}" if grown else f"holds the whole {walk}"
        lines.append(f"window    {window} {fit}")
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


def _surface_figure(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from fastsurface.views.surface import surface_figure  # plain figure data, without plotly's validators

    return surface_figure(*args, **kwargs)
