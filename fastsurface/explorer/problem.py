"""What the explorer shows, and the library calls that compute it.

A ``Problem`` holds a model, the plane it is sliced along, its data and the engine's
settings, and answers the page's settings with the public API: ``loss_surface`` for a
surface, ``critical_points`` for its critical points, ``record_path`` and
``project_path`` for a training path, ``train_many`` and ``basin_map`` for a basin
map of many starts. The seed problem (``SeedProblem``) draws its
data from the page's size and seeds and trains plain SGD with ``train_sgd``, so a
faster ``train_sgd`` speeds the explorer up unchanged.

Recent results are cached (a few surfaces and paths, least recently used first out),
so a download or a return to earlier settings does not recompute them.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import fastsurface as fs
from fastsurface._support.devices import check_representable, resolve_dtype
from fastsurface.errors import FastsurfaceError
from fastsurface.explorer.settings import (
    MAX_TRAINING_STEPS,
    BasinSettings,
    Evaluation,
    PathSettings,
    SeedData,
    SurfaceSettings,
)

Data = Any  # an (x, y) pair or an iterable of batches, as loss_surface takes
# Heavy-ball momentum of the "momentum" optimiser.
MOMENTUM = 0.9
# Results kept per kind: surfaces (up to 2 MB each at MAX_GRID_POINTS), paths, data
# splits, basin maps (their runs' recorded paths: about 1 MB at MAX_BASIN_POINTS).
_SURFACES, _PATHS, _SPLITS, _BASINS = 8, 64, 4, 4
_OPTIMISERS: dict[str, Callable[[float], Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]]] = {
    "sgd": lambda lr: lambda p: torch.optim.SGD(p, lr=lr),
    "momentum": lambda lr: lambda p: torch.optim.SGD(p, lr=lr, momentum=MOMENTUM),
    "adam": lambda lr: lambda p: torch.optim.Adam(p, lr=lr),
}


class Problem:
    """A model, a plane through its parameters, its data, and the engine's settings.

    Args:
        model: any module; it is only read.
        plane: the slice of parameter space the page shows.
        split: ``(train, test)`` for the page's seed data settings (``None`` outside
            the seed problem): training data of the paths, as ``record_path`` takes,
            and evaluation data of the surface and of the paths' losses.
        seed_data: whether the page chooses the data (``samples``, ``seed``, ``split_seed``).
        loss: per-sample loss, as ``loss_surface`` takes.
        device, dtype: where and in what the engine computes.
        defaults: the page's starting settings (``w1``, ``w2``, ``step``, ``start``,
            ``lr``, ``epochs``, ``optimiser``, ``reduction``, ``batch_size``, ``view``,
            ``log_color``, ``critical_points``).
    """

    def __init__(
        self,
        model: nn.Module,
        plane: fs.Plane,
        split: Callable[[SeedData | None], tuple[Data, Data]],
        *,
        seed_data: bool = False,
        loss: Any = "mse",
        device: Any = "auto",
        dtype: Any = torch.float32,
        defaults: Mapping[str, object],
    ) -> None:
        self.model, self.plane, self.split, self.seed_data = model, plane, split, seed_data
        self.loss = loss
        self.engine = {"loss": loss, "device": device, "dtype": dtype}
        self.defaults = dict(defaults)
        self.surface = functools.lru_cache(maxsize=_SURFACES)(self._surface)
        self.critical_points = functools.lru_cache(maxsize=_SURFACES)(self._critical_points)
        self.path = functools.lru_cache(maxsize=_PATHS)(self._path)
        self.basins = functools.lru_cache(maxsize=_BASINS)(self._basins)

    @property
    def labels(self) -> tuple[str, str]:
        return self.plane.labels

    def _surface(self, settings: SurfaceSettings) -> fs.Surface:
        _, test = self.split(settings.evaluation.data)
        return fs.loss_surface(
            self.model, test, *settings.axes(), plane=self.plane, **self._evaluation(settings.evaluation)
        )

    def _critical_points(self, settings: SurfaceSettings) -> list[fs.CriticalPoint]:
        _, test = self.split(settings.evaluation.data)
        return fs.critical_points(
            self.surface(settings),
            self.model,
            test,
            plane=self.plane,
            loss=self.loss,
            batch_size=settings.evaluation.batch_size,
            device=self.engine["device"],
        )

    def _path(self, settings: PathSettings) -> fs.Trajectory:
        train, test = self.split(settings.evaluation.data)
        _check_training_steps(train, settings.epochs, settings.evaluation.batch_size)
        self._check_lr(settings.lr)
        return self._train(settings, train, test)

    def _train(self, settings: PathSettings, train: Data, test: Data) -> fs.Trajectory:
        """Train the whole model from the plane's point ``start`` with ``record_path``
        and project the recorded parameters onto the plane with ``project_path``."""
        start = model_at(self.model, self.plane, settings.start)
        recorded = fs.record_path(
            start,
            train,
            optimizer=_OPTIMISERS[settings.optimiser](settings.lr),
            epochs=settings.epochs,
            batch_size=settings.evaluation.batch_size,
            loss=self.loss,
            device=self.engine["device"],
            dtype=self.engine["dtype"],
        )
        projected = fs.project_path(self.model, self.plane, recorded, test, **self._evaluation(settings.evaluation))
        return projected.trajectory()

    def _basins(self, settings: BasinSettings) -> tuple[fs.BasinMap, fs.Trajectories]:
        """The basin map of ``settings`` with ``train_many`` (the whole model trains, as
        ``_train``'s paths do; for the seed model that is its plane) and ``basin_map``,
        and the runs it was made from."""
        evaluation = settings.surface.evaluation
        train, test = self.split(evaluation.data)
        _check_training_steps(train, settings.epochs, evaluation.batch_size)
        self._check_lr(settings.lr)
        runs = fs.train_many(
            self.model,
            train,
            test,
            grid=settings.starts(),
            plane=self.plane,
            optimizer=_OPTIMISERS[settings.optimiser](settings.lr),
            epochs=settings.epochs,
            evaluate="final",
            **self._evaluation(evaluation),
        )
        return fs.basin_map(runs), runs

    def _check_lr(self, lr: float) -> None:
        """Refuse a learning rate the compute dtype cannot hold: torch's optimisers would
        fail on it mid-step (Adam at once, SGD with momentum on its first update)."""
        check_representable("lr", np.array([lr]), resolve_dtype(self.engine["dtype"]))

    def _evaluation(self, evaluation: Evaluation) -> dict[str, Any]:
        return {**self.engine, "reduction": evaluation.reduction, "batch_size": evaluation.batch_size}


class SeedProblem(Problem):
    """The seed article's problem: ``ANN(1, 1, 1)`` on its two weights, data drawn
    and split with the page's size and seeds, plain SGD trained by ``train_sgd``."""

    def __init__(self, *, device: Any = "auto", dtype: Any = torch.float32) -> None:
        model = fs.ANN(1, 1, 1)
        split = functools.lru_cache(maxsize=_SPLITS)(seed_split)
        super().__init__(
            model, fs.default_plane(model), split, seed_data=True, device=device, dtype=dtype, defaults=SEED_DEFAULTS
        )

    def _train(self, settings: PathSettings, train: Data, test: Data) -> fs.Trajectory:
        if settings.optimiser != "sgd":
            return super()._train(settings, train, test)
        return fs.train_sgd(
            self.model,
            train,
            test,
            lr=settings.lr,
            epochs=settings.epochs,
            start=settings.start,
            **self._evaluation(settings.evaluation),
        )


def seed_split(data: SeedData | None) -> tuple[Data, Data]:
    """The seed data of ``data``'s size and seeds, split 80/20 (as ``fastsurface run`` does)."""
    if data is None:
        raise FastsurfaceError("the seed problem needs `samples`, `seed` and `split_seed`")
    return fs.train_test_split(*fs.piecewise_dataset(data.samples, seed=data.seed), seed=data.split_seed)


def model_at(model: nn.Module, plane: fs.Plane, point: tuple[float, float]) -> nn.Module:
    """A copy of ``model`` with the parameters ``plane`` moves set to its point ``(a, b)``."""
    moved = copy.deepcopy(model)
    parameters = dict(moved.named_parameters())
    exact = plane.to(torch.device("cpu"), torch.float64)
    a, b = (torch.tensor(value, dtype=torch.float64) for value in point)
    with torch.no_grad():
        for name, value in exact.params(a, b).items():
            parameters[name].copy_(value)
    return moved


def _check_training_steps(train: Data, epochs: int, batch_size: int) -> None:
    """Refuse training of more than ``MAX_TRAINING_STEPS`` optimiser steps a run (when
    the training data's length is known)."""
    if isinstance(train, (tuple, list)) and len(train) == 2:
        per_epoch = math.ceil(len(train[0]) / batch_size)
    elif hasattr(train, "__len__"):
        per_epoch = len(train)
    else:
        return
    if epochs * per_epoch > MAX_TRAINING_STEPS:
        raise FastsurfaceError(
            f"`epochs` of {epochs} at {per_epoch} batches per epoch means {epochs * per_epoch:,} "
            f"optimiser steps, more than the {MAX_TRAINING_STEPS:,} the explorer takes per path; lower `epochs` "
            "or raise `batch_size`"
        )


SEED_DEFAULTS: dict[str, object] = {
    "w1": [-2.0, 2.0],
    "w2": [-2.0, 2.0],
    "step": 0.05,
    "samples": 10_000,
    "seed": 42,
    "split_seed": 0,
    "reduction": "mean",
    "batch_size": 64,
    "start": [-1.0, -1.0],
    "lr": 1e-2,
    "epochs": 25,
    "optimiser": "sgd",
    "view": "contour",
    "log_color": False,
    "critical_points": False,
    "points": 30,
}
# A model from Python: a window of its plane around the model itself, paths from there.
MODEL_DEFAULTS: dict[str, object] = {
    **{name: value for name, value in SEED_DEFAULTS.items() if name not in ("samples", "seed", "split_seed")},
    "w1": [-1.0, 1.0],
    "w2": [-1.0, 1.0],
    "start": [0.0, 0.0],
    "epochs": 5,
}
