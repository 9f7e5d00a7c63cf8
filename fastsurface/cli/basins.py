"""``fastsurface basins``: the seed problem's basin map, an optimiser started from every grid point."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import fastsurface as fs
from fastsurface._support.choices import COLOURINGS, TRAINING_METHODS
from fastsurface._support.files import all_or_nothing
from fastsurface.cli import _shared
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError, check_positive_int

if TYPE_CHECKING:
    import numpy as np
    import torch

# --optimizer names, each the torch optimiser (by name in torch.optim) and its keywords from
# --lr and --momentum; torch is imported only when the command runs.
OPTIMIZERS: dict[str, tuple[str, Callable[[float, float], dict[str, Any]]]] = {
    "sgd": ("SGD", lambda lr, _momentum: {"lr": lr}),
    "momentum": ("SGD", lambda lr, momentum: {"lr": lr, "momentum": momentum}),
    "nesterov": ("SGD", lambda lr, momentum: {"lr": lr, "momentum": momentum, "nesterov": True}),
    "adam": ("Adam", lambda lr, _momentum: {"lr": lr}),
    "adamw": ("AdamW", lambda lr, _momentum: {"lr": lr}),
    "rmsprop": ("RMSprop", lambda lr, _momentum: {"lr": lr}),
    "adagrad": ("Adagrad", lambda lr, _momentum: {"lr": lr}),
}


def declare(basins: argparse.ArgumentParser) -> None:
    """The flags of ``basins`` beyond the seed problem's: the optimiser, the map and its file."""
    basins.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd", help="the optimiser of every run")
    basins.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    basins.add_argument("--momentum", type=float, default=0.9, help="momentum of 'momentum' and 'nesterov'")
    basins.add_argument("--epochs", type=int, default=25, help="epochs of every run")
    basins.add_argument("--train-seed", type=int, default=0, help="seed of the training batches' shuffling")
    basins.add_argument("--training-method", choices=TRAINING_METHODS, default="auto", help="how the steps run")
    basins.add_argument(
        "--tolerance", type=float, help="attractor linkage and settling distance (default: 5%% of the grid's span)"
    )
    basins.add_argument("--color", choices=COLOURINGS, default="attractor", help="colour starts by fate")
    basins.add_argument("--log-color", action="store_true", help="with --color loss: colour by log10(loss)")
    basins.add_argument("--sample-paths", type=int, default=8, help="sample paths drawn over the map")
    basins.add_argument(
        "--watershed", action="store_true", help="draw the surface's watershed and mark starts that leave their basin"
    )
    basins.add_argument(
        "--min-persistence", type=float, default=0.0, help="with --watershed: merge shallower geometric basins"
    )
    basins.add_argument("--critical-points", action="store_true", help="find and mark the surface's critical points")
    basins.add_argument("--output", default="basins.html", help="the HTML file to write")
    basins.add_argument("--plotlyjs", choices=("embed", "cdn"), default="embed", help="embed plotly.js or use a CDN")


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Train every start, map the fates, draw; the figure and --save file are written, or neither."""
    import numpy as np
    import torch

    from fastsurface.views.export import check_export

    if not arguments.output.lower().endswith((".html", ".htm")):
        raise FastsurfaceError(f"`--output` must end in .html or .htm, got {arguments.output!r}")
    output = check_export("--output", arguments.output, arguments.plotlyjs)
    saved = _shared.save_path(arguments)
    problem = _shared.seed_problem(arguments)
    first, second, train, test = problem.w1, problem.w2, problem.train, problem.test
    check_positive_int("--sample-paths", arguments.sample_paths)
    if not (np.isfinite(arguments.lr) and arguments.lr > 0):
        raise FastsurfaceError(f"`--lr` must be a finite number > 0, got {arguments.lr:g}")
    model = problem.model
    name, keywords = OPTIMIZERS[arguments.optimizer]
    optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer] = partial(
        getattr(torch.optim, name), **keywords(arguments.lr, arguments.momentum)
    )
    runs = fs.train_many(
        model,
        train,
        test,
        grid=(first, second),
        optimizer=optimizer,
        epochs=arguments.epochs,
        seed=arguments.train_seed,
        evaluate="final",
        training_method=arguments.training_method,
        method=arguments.method,
        **_shared.evaluation_options(arguments),
    )
    basins = fs.basin_map(runs, arguments.tolerance)
    surface = fs.loss_surface(model, test, first, second, **_shared.surface_options(arguments))
    points = fs.critical_points(surface, model, test, dtype="float64") if arguments.critical_points else []
    watershed = fs.watershed(surface) if arguments.watershed else None
    disagreement = None if watershed is None else fs.basin_disagreement(basins, watershed, arguments.min_persistence)
    figure = fs.plot_basins(
        basins,
        surface,
        color=arguments.color,
        log_color=arguments.log_color,
        paths=runs,
        samples=arguments.sample_paths,
        critical_points=points,
        watershed=watershed,
        disagreement=disagreement,
    )
    with all_or_nothing():
        fs.write_figure(figure, output, plotlyjs=arguments.plotlyjs)
        if saved is not None:
            provenance = _shared.provenance(arguments)
            fs.save(saved, surface=surface, trajectories=runs, plane=fs.default_plane(model), provenance=provenance)
    written = [output, *([saved] if saved else [])]
    print("\n".join(_summary(runs, basins, watershed, disagreement, arguments.min_persistence, written)))
    return ExitCode.OK


def _summary(
    runs: fs.Trajectories,
    basins: fs.BasinMap,
    watershed: fs.Watershed | None,
    disagreement: np.ndarray | None,
    min_persistence: float,
    written: Sequence[object],
) -> list[str]:
    first, second = basins.labels
    count = runs.count
    lines = [
        f"runs      {count:,} starts on a {len(basins.w1)} x {len(basins.w2)} grid, {basins.optimizer}, "
        f"{basins.steps:,} steps each, {runs.method} on {runs.device}: {runs.seconds:.1f} s",
        f"basins    {len(basins.sizes)} attractor(s) within {basins.tolerance:.3g}, "
        f"{int(basins.diverged.sum()):,} run(s) diverged",
    ]
    lines += [
        f"          attractor {label}: {first}={a:.4g}, {second}={b:.4g}, {size:,} starts ({size / count:.1%})"
        for label, ((a, b), size) in enumerate(zip(basins.attractors[:5], basins.sizes[:5], strict=True))
    ]
    if watershed is not None and disagreement is not None:
        kept = int((watershed.persistence >= min_persistence).sum())
        lines.append(
            f"watershed {len(watershed.minima)} geometric basin(s), {kept} with persistence >= {min_persistence:g}; "
            f"{int(disagreement.sum()):,} start(s) end elsewhere than most starts of their basin"
        )
    lines += [f"wrote     {path}" for path in written]
    return lines


COMMAND = _shared.Command(
    name="basins",
    summary="the seed problem's basin map: where an optimiser goes from every grid point",
    description="Train the seed article's two-weight network from every point of the w1 x w2 grid at once, "
    "cluster where the runs end into attractors, and write an HTML map of each start's fate over the test "
    "loss's contours (and the surface's watershed with --watershed).",
    declare=declare,
    handle=handle,
    flag_groups=_shared.SEED_PROBLEM_FLAGS,
)
