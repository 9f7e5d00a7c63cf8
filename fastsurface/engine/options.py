"""The evaluation options: every setting the engine's evaluating functions share, in one object.

``loss_surface``, ``evaluate_points``, ``train_sgd``, ``critical_points`` and the rest take
these settings as keyword arguments (their public signatures); each builds one
``EvalOptions`` from them, which checks every value before any work, and hands that down.
A run's key (``runs.checkpoint``) reads the same object, so a new option is added here once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from fastsurface._support.choices import METHODS, REDUCTIONS, Method, Reduction
from fastsurface._support.devices import DeviceLike, DTypeLike, resolve_device, resolve_dtype
from fastsurface.engine._losses import Loss, PerSampleLoss, resolve_loss
from fastsurface.errors import FastsurfaceError, check_bool, check_choice, check_positive_int
from fastsurface.planes.plane import Plane

DEFAULT_BATCH_SIZE = 64
# Bytes one kernel call may use unless `memory_budget` says otherwise.
DEFAULT_BUDGET = {"cpu": 256 * 2**20, "cuda": 1024 * 2**20}


@dataclass(frozen=True)
class EvalOptions:
    """How the engine evaluates losses; the meaning of each field is documented on
    ``loss_surface``.

    Constructing one checks every value (``FastsurfaceError`` naming the argument) and
    resolves ``loss``, ``device`` and ``dtype`` once, into ``objective``,
    ``compute_device`` and ``compute_dtype`` (not compared: equality is of the values
    as given); ``budget`` is the tile budget in bytes.
    """

    loss: str | PerSampleLoss = "mse"
    reduction: Reduction = "mean"
    batch_size: int = DEFAULT_BATCH_SIZE
    device: DeviceLike = "auto"
    dtype: DTypeLike = torch.float32
    memory_budget: int | None = None
    tile_points: int | None = None
    method: Method = "auto"
    progress: bool = False
    train_mode: bool = False
    objective: Loss = field(init=False, repr=False, compare=False)
    compute_device: torch.device = field(init=False, repr=False, compare=False)
    compute_dtype: torch.dtype = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("reduction", self.reduction, REDUCTIONS)
        check_positive_int("batch_size", self.batch_size)
        if self.memory_budget is not None:
            check_positive_int("memory_budget", self.memory_budget)
        if self.tile_points is not None:
            check_positive_int("tile_points", self.tile_points)
        check_choice("method", self.method, METHODS)
        check_bool("train_mode", self.train_mode)
        check_bool("progress", self.progress)
        if self.train_mode and self.method not in ("auto", "vmap"):
            raise FastsurfaceError(f"`method` must be 'auto' or 'vmap' with `train_mode`, got {self.method!r}")
        object.__setattr__(self, "objective", resolve_loss(self.loss))
        object.__setattr__(self, "compute_device", resolve_device(self.device))
        object.__setattr__(self, "compute_dtype", resolve_dtype(self.dtype))

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, object]) -> EvalOptions:
        """Options from a function's ``**keywords``; unknown names are refused by name."""
        unknown = sorted(set(keywords) - set(OPTION_NAMES))
        if unknown:
            raise FastsurfaceError(
                f"`options` must be evaluation options ({', '.join(OPTION_NAMES)}), got unknown {unknown}"
            )
        return cls(**keywords)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> EvalOptions:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def budget(self) -> int:
        """Bytes of working memory for one tile: ``memory_budget`` or the device's default."""
        return int(self.memory_budget or DEFAULT_BUDGET[self.compute_device.type])


OPTION_NAMES: tuple[str, ...] = tuple(option.name for option in dataclasses.fields(EvalOptions) if option.init)


def surface_keywords(keywords: Mapping[str, object]) -> tuple[Plane | None, EvalOptions]:
    """``loss_surface``'s keyword arguments, as functions that forward them take them: the
    plane (``None`` for the model's default) and the evaluation options, checked."""
    rest = dict(keywords)
    plane = rest.pop("plane", None)
    if plane is not None and not isinstance(plane, Plane):
        raise FastsurfaceError(f"`plane` must be a fastsurface Plane, got {type(plane).__name__}")
    return plane, EvalOptions.from_keywords(rest)
