"""``fastsurface basins``: the seed problem's basin map, an optimiser started from every grid point."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

import fastsurface as fs
from fastsurface._support.files import all_or_nothing
from fastsurface.analysis.many import TRAINING_METHODS
from fastsurface.cli import _evaluation_options, _grid, _provenance, _save_path, _seed_split, _surface_options
from fastsurface.errors import FastsurfaceError, check_positive_int
from fastsurface.views.basins import COLOURINGS
from fastsurface.views.export import check_export

# --optimizer names and the torch optimiser each builds with --lr (and --momentum).
OPTIMIZERS: dict[str, Callable[[float, float], Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]]] = {
    "sgd": lambda lr, _momentum: partial(torch.optim.SGD, lr=lr),
    "momentum": lambda lr, momentum: partial(torch.optim.SGD, lr=lr, momentum=momentum),
    "nesterov": lambda lr, momentum: partial(torch.optim.SGD, lr=lr, momentum=momentum, nesterov=True),
    "adam": lambda lr, _momentum: partial(torch.optim.Adam, lr=lr),
    "adamw": lambda lr, _momentum: partial(torch.optim.AdamW, lr=lr),
    "rmsprop": lambda lr, _momentum: partial(torch.optim.RMSprop, lr=lr),
    "adagrad": lambda lr, _momentum: partial(torch.optim.Adagrad, lr=lr),
}


def add_parser(commands: Any, shared: argparse.ArgumentParser) -> None:
    """Declare ``basins`` among ``commands``, with the grid, data and evaluation flags of
    ``shared`` (those of ``run``)."""
    basins = commands.add_parser(
        "basins",
        parents=[shared],
        help="the seed problem's basin map: where an optimiser goes from every grid point",
        description="Train the seed article's two-weight network from every point of the w1 x w2 grid at once, "
        "cluster where the runs end into attractors, and write an HTML map of each start's fate over the test "
        "loss's contours (and the surface's watershed with --watershed).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
    basins.set_defaults(handler=handle)


def handle(arguments: argparse.Namespace) -> int:
    """Train every start, map the fates, draw; the figure and --save file are written, or neither."""
    if not arguments.output.lower().endswith((".html", ".htm")):
        raise FastsurfaceError(f"`--output` must end in .html or .htm, got {arguments.output!r}")
    output = check_export("--output", arguments.output, arguments.plotlyjs)
    saved = _save_path(arguments)
    first, second = _grid(arguments)
    train, test = _seed_split(arguments)
    check_positive_int("--sample-paths", arguments.sample_paths)
    if not (np.isfinite(arguments.lr) and arguments.lr > 0):
        raise FastsurfaceError(f"`--lr` must be a finite number > 0, got {arguments.lr:g}")
    model = fs.ANN(1, 1, 1)
    optimizer = OPTIMIZERS[arguments.optimizer](arguments.lr, arguments.momentum)
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
        **_evaluation_options(arguments),
    )
    basins = fs.basin_map(runs, arguments.tolerance)
    surface = fs.loss_surface(model, test, first, second, **_surface_options(arguments))
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
            provenance = _provenance(arguments)
            fs.save(saved, surface=surface, trajectories=runs, plane=fs.default_plane(model), provenance=provenance)
    written = [output, *([saved] if saved else [])]
    print("\n".join(_summary(runs, basins, watershed, disagreement, arguments.min_persistence, written)))
    return 0


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
