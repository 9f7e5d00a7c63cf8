"""Any model on the command line: ``--model`` and ``--data`` name Python code the way
``uvicorn module:app`` does, and ``--plane`` chooses the slice through its parameters.

A spec is ``path/to/file.py:name`` (the file is run as a module, its folder first on
``sys.path``, as ``python file.py`` would have it) or ``package.module:name`` (imported with
the current folder first on ``sys.path``). ``--model``'s ``name`` is a factory called with
no arguments that returns an ``nn.Module`` (building it and, if it likes, loading its
weights); ``--data``'s a loader called with no arguments that returns an ``(x, y)`` pair of
arrays/tensors or an iterable of ``(x, y)`` batches (a ``DataLoader``, a list).

Only ``argparse`` and the standard library are imported at the top: the flags must cost
nothing to ``--help``, and the seed's main job nothing at all.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastsurface._support.files import check_readable
from fastsurface.errors import FastsurfaceError, check_positive_int, check_seed

if TYPE_CHECKING:
    from torch import nn

    from fastsurface import ParameterPath, Plane

PLANES = ("weights", "random", "pca", "hessian", "interpolation", "entries")
NORMALIZATIONS = ("filter", "layer", "model", "none")
# --optimizer names and the torch optimiser each builds with --lr.
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
_TOO_SHORT = (
    "`--plane` pca needs a training path of at least 3 recorded points, got {points}: "
    "use `--epochs` 2 or more, or `--record step`"
)
_TRUST = (
    "Naming a file or module runs its code, with your permissions, as `python FILE` would: use only code you trust."
)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--data``, ``--loss`` and the plane: any model instead of the seed's."""
    group = parser.add_argument_group(
        "any model",
        "Your own model and data instead of the seed article's, and the plane through its parameters. "
        "SPEC is path/to/file.py:NAME or package.module:NAME (as `uvicorn module:app`). " + _TRUST,
    )
    group.add_argument(
        "--model",
        metavar="SPEC",
        help="factory called with no arguments, returning a torch.nn.Module (it may load its weights); "
        "default: the seed article's two-weight network",
    )
    group.add_argument(
        "--data",
        metavar="SPEC",
        help="loader called with no arguments, returning an (x, y) pair of arrays/tensors or an iterable of "
        "(x, y) batches (a DataLoader): the data the surface is evaluated on; default: the seed data's test split "
        "(--samples, --seed, --test-size, --split-seed apply only then)",
    )
    group.add_argument(
        "--loss",
        default="mse",
        help="per-sample loss: mse, cross_entropy (integer class targets) or another name the library knows",
    )
    group.add_argument(
        "--plane",
        choices=PLANES,
        help="the plane: weights (a model with exactly two parameter entries, the seed's default), random "
        "(Li et al.'s filter-normalised directions, the default for --model), pca (of the training path; "
        "`run` only), hessian (top-2 Hessian eigenvectors of the loss on --data), interpolation (towards "
        "--plane-end), entries (two parameter entries, --entries)",
    )
    group.add_argument("--plane-seed", type=int, default=0, help="seed of random directions and of Hessian Lanczos")
    group.add_argument(
        "--normalization", choices=NORMALIZATIONS, default="filter", help="random directions' normalisation"
    )
    group.add_argument(
        "--one-dim", choices=("zero", "keep"), default="zero", help="random directions in biases and norm scales"
    )
    group.add_argument("--orthogonal", action="store_true", help="make the second random direction orthogonal")
    group.add_argument(
        "--plane-end",
        nargs="+",
        metavar="SPEC",
        help="interpolation: one model factory (the line from the model to it; w2 then has no effect) or two "
        "(the plane through the model and both)",
    )
    group.add_argument(
        "--entries", nargs=2, metavar=("FIRST", "SECOND"), help="entries: two entries such as 'net.0.weight[0, 1]'"
    )
    group.add_argument("--hessian-iterations", type=int, default=50, help="hessian: most Lanczos steps per direction")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """``run``'s training of a user model: its data and optimiser (``--lr``, ``--epochs`` are ``run``'s own)."""
    parser.add_argument(
        "--train-data",
        metavar="SPEC",
        help="loader of the training data, as --data; default: --data itself (with --model or --data)",
    )
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, help="optimiser of a --model's training with --lr (momentum: SGD, 0.9)"
    )


def uses_seed(arguments: argparse.Namespace) -> bool:
    """Whether the command runs the seed article's problem (no flag of any model given)."""
    names = ("model", "data", "train_data", "plane", "optimizer", "plane_end", "entries")
    return arguments.loss == "mse" and all(getattr(arguments, name, None) is None for name in names)


def load_object(flag: str, spec: str) -> Any:
    """The object ``spec`` (``FILE.py:NAME`` or ``package.module:NAME``) names, imported.

    Raises ``FastsurfaceError`` naming ``flag`` for a spec without a colon, a missing
    file or module, an import that raises, or a missing name.
    """
    where, colon, name = spec.rpartition(":")
    if not colon or not where or not name.isidentifier():
        raise FastsurfaceError(
            f"`{flag}` must be path/to/file.py:NAME or package.module:NAME (a colon, then a Python name), got {spec!r}"
        )
    module = _import(flag, where)
    if not hasattr(module, name):
        public = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise FastsurfaceError(f"`{flag}`: {where!r} has no {name!r} (its callables: {', '.join(public) or 'none'})")
    return getattr(module, name)


def load_model(flag: str, spec: str) -> nn.Module:
    """The module ``spec``'s factory returns."""
    from torch import nn

    model = _called(flag, spec, "factory")
    if not isinstance(model, nn.Module):
        raise FastsurfaceError(f"`{flag}`: {spec!r} must return a torch.nn.Module, got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise FastsurfaceError(f"`{flag}`: {spec!r} returned a module without parameters")
    return model


def load_data(flag: str, spec: str, library_name: str) -> object:
    """The data ``spec``'s loader returns, checked as the library checks ``library_name``."""
    from fastsurface.engine import _stream as stream

    data = _called(flag, spec, "loader")
    try:
        stream.check_data(library_name, data)
    except FastsurfaceError as error:
        raise FastsurfaceError(f"`{flag}`: {spec!r} returned the wrong thing: {error}") from error
    return data


@dataclass(frozen=True)
class Problem:
    """A model, its data and a grid, as the flags set them.

    Attributes:
        model: the seed's network or ``--model``'s.
        train: training data (the seed's train split, or ``--train-data``/``--data``).
        test: the data surfaces are evaluated on (the seed's test split, or ``--data``).
        w1, w2: the grid's axes, float64.
        source: the model and data, in words, for the summary.
    """

    model: nn.Module
    train: object
    test: object
    w1: Any
    w2: Any
    source: str


def problem(arguments: argparse.Namespace) -> Problem:
    """The grid, the data and the model of the flags, checked in that order (the data
    are loaded before the model, so a bad loader costs no model)."""
    from fastsurface.cli import _shared
    from fastsurface.engine import _stream as stream

    w1, w2 = _shared.grid_axes(arguments)
    train: object
    test: object
    if arguments.data is None:
        train, test = _shared.seed_split(arguments)
    else:
        test = load_data("--data", arguments.data, "data")
        train = test
    if plane_kind(arguments) == "hessian" and not stream.is_pair(test):
        raise FastsurfaceError(
            "`--plane` hessian needs `--data` to return an (x, y) pair (the Hessian is of the loss on all of it), "
            f"got {type(test).__name__}"
        )
    train_spec = getattr(arguments, "train_data", None)
    if train_spec is not None:
        train = load_data("--train-data", train_spec, "train")
    if arguments.model is None:
        import fastsurface as fs

        model: nn.Module = fs.ANN(1, 1, 1)
    else:
        model = load_model("--model", arguments.model)
    data = "the seed data" if arguments.data is None else arguments.data
    source = f"{arguments.model or 'the seed network'} on {data}"
    if train_spec is not None:
        source += f" (trained on {train_spec})"
    return Problem(model, train, test, w1, w2, source)


def plane_kind(arguments: argparse.Namespace) -> str:
    """``--plane``, or its default: the two weights for the seed network, random for ``--model``."""
    if arguments.plane is not None:
        return str(arguments.plane)
    return "weights" if arguments.model is None else "random"


def check_plane_flags(arguments: argparse.Namespace, command: str) -> None:
    """Refuse, before any work, plane flags that do not fit ``--plane``."""
    kind = plane_kind(arguments)
    check_seed("--plane-seed", arguments.plane_seed)
    check_positive_int("--hessian-iterations", arguments.hessian_iterations)
    if kind == "pca" and command != "run":
        raise FastsurfaceError(
            "`--plane` pca is the plane of a training path, which `surface` does not train; use "
            "`fastsurface run --plane pca` (it trains --model with --optimizer and takes the plane of its path)"
        )
    if kind == "pca" and arguments.record == "epoch" and arguments.epochs < 2:
        raise FastsurfaceError(_TOO_SHORT.format(points=f"{arguments.epochs + 1} (`--epochs` {arguments.epochs})"))
    if (arguments.plane_end is not None) != (kind == "interpolation"):
        raise FastsurfaceError("`--plane-end` goes with `--plane interpolation`, and that plane needs it")
    if arguments.plane_end is not None and len(arguments.plane_end) > 2:
        raise FastsurfaceError(f"`--plane-end` takes one or two model specs, got {len(arguments.plane_end)}")
    if (arguments.entries is not None) != (kind == "entries"):
        raise FastsurfaceError("`--entries` goes with `--plane entries`, and that plane needs it")


def build_plane(
    arguments: argparse.Namespace, model: nn.Module, data: object, path: ParameterPath | None = None
) -> tuple[Plane, str]:
    """The plane ``--plane`` names through ``model`` (with the training ``path`` for PCA),
    and its description for the summary."""
    import fastsurface as fs

    kind = plane_kind(arguments)
    if kind == "weights":
        count = sum(p.numel() for p in model.parameters())
        if count != 2:
            raise FastsurfaceError(
                f"`--plane` weights needs a model with exactly two parameter entries, `--model` has {count:,}; "
                "choose random, pca, hessian, interpolation or entries"
            )
        return fs.default_plane(model), "the model's two weights"
    if kind == "random":
        normalization = None if arguments.normalization == "none" else arguments.normalization
        plane = fs.random_plane(
            model, arguments.plane_seed, normalization, arguments.one_dim, orthogonal=arguments.orthogonal
        )
        return plane, (
            f"random, seed {arguments.plane_seed}, {arguments.normalization} normalisation, "
            f"one-dimensional parameters {'kept' if arguments.one_dim == 'keep' else 'still'}"
            + (", orthogonal" if arguments.orthogonal else "")
        )
    if kind == "pca":
        assert path is not None  # check_plane_flags: `run` only, which trains
        if len(path.step) < 3:
            raise FastsurfaceError(_TOO_SHORT.format(points=len(path.step)))
        principal = fs.pca_plane(path)
        ratio = ", ".join(f"{r:.3g}" for r in principal.explained_variance_ratio)
        return principal.plane, f"pca of the {len(path.step)}-point training path, explained variance {ratio}"
    if kind == "hessian":
        found = fs.hessian_plane(
            model,
            data,
            loss=arguments.loss,
            iterations=arguments.hessian_iterations,
            seed=arguments.plane_seed,
            progress=arguments.progress,
        )
        values = ", ".join(f"{v:.6g}" for v in found.eigenvalues)
        return found.plane, f"hessian, eigenvalues {values} ({found.iterations} Lanczos steps)"
    if kind == "interpolation":
        ends = [load_model("--plane-end", spec) for spec in arguments.plane_end]
        with _blaming("--plane-end", ("end", "first", "second")):
            plane = fs.interpolation_line(model, ends[0]) if len(ends) == 1 else fs.interpolation_plane(model, *ends)
        return plane, f"interpolation from the model to {' and '.join(arguments.plane_end)}"
    with _blaming("--entries", ("first", "second")):
        plane = fs.entry_plane(model, *arguments.entries)
    return plane, f"entries {arguments.entries[0]}, {arguments.entries[1]}"


def optimizer_factory(arguments: argparse.Namespace) -> Callable[[Any], Any]:
    """The factory of ``--optimizer`` (SGD by default) with ``--lr``, checked."""
    import torch

    if not (math.isfinite(arguments.lr) and arguments.lr > 0):
        raise FastsurfaceError(f"`--lr` must be a finite number > 0, got {arguments.lr:g}")
    lr = arguments.lr
    factories: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
        "sgd": lambda p: torch.optim.SGD(p, lr=lr),
        "momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
        "adam": lambda p: torch.optim.Adam(p, lr=lr),
        "adamw": lambda p: torch.optim.AdamW(p, lr=lr),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=lr),
    }
    return factories[arguments.optimizer or "sgd"]


def _import(flag: str, where: str) -> Any:
    """The module at ``where``: a ``.py`` file, or a dotted module name."""
    if where.endswith(".py"):
        file = check_readable(flag, where)
        folder = str(file.resolve().parent)
        name = f"fastsurface_user_{file.stem}"
        return _guarded(flag, where, lambda: _from_file(name, file), folder)
    return _guarded(flag, where, lambda: importlib.import_module(where), str(Path.cwd()))


def _from_file(name: str, file: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    spec.loader.exec_module(module)
    return module


def _guarded(flag: str, where: str, load: Callable[[], Any], folder: str) -> Any:
    """``load()`` with ``folder`` first on ``sys.path``; what it raises becomes a one-line error."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        return load()
    except ModuleNotFoundError as error:
        raise FastsurfaceError(f"`{flag}`: cannot import {where!r}: {error}") from error
    except (Exception, SystemExit) as error:
        raise FastsurfaceError(f"`{flag}`: importing {where!r} raised {type(error).__name__}: {error}") from error


def _called(flag: str, spec: str, role: str) -> Any:
    """The result of calling ``spec``'s object with no arguments (a ``role``: factory, loader)."""
    target = load_object(flag, spec)
    if not callable(target):
        raise FastsurfaceError(f"`{flag}`: {spec!r} must be a {role} (callable), got {type(target).__name__}")
    try:
        return target()
    except (Exception, SystemExit) as error:
        raise FastsurfaceError(f"`{flag}`: calling {spec!r} raised {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def _blaming(flag: str, names: tuple[str, ...]) -> Iterator[None]:
    """Errors of a plane constructor with its argument ``names`` written as ``flag``."""
    try:
        yield
    except FastsurfaceError as error:
        message = str(error)
        for name in names:
            message = message.replace(f"`{name}`", f"`{flag}`")
        raise FastsurfaceError(message) from error
