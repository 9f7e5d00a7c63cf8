"""Optimisers for many runs at once: which are exact on stacked parameters, and grouping.

``train_many`` hands an optimizer factory (as ``record_path`` takes) the runs' stacked
parameters, tensors of shape ``(K, ...)``. An optimiser whose update of each entry reads
only that entry's gradient and state, and scalars that depend on the step count alone,
then performs ``K`` independent runs exactly: SGD (momentum, Nesterov, dampening, weight
decay), Adam, AdamW, Adamax, NAdam, RAdam, RMSprop (centred too), Adagrad, Adadelta,
Rprop and ASGD. Others (L-BFGS's line search and curvature pairs, Adafactor's factored
moments, SparseAdam, anything torch does not ship) are refused.

Runs with different factories are grouped by the optimiser those factories build (its
class and hyperparameters), and each group gets its own optimiser: a ``(K,)`` learning
rate is a list of factories, one per run, not an approximation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fastsurface.errors import FastsurfaceError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

ELEMENTWISE: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
    torch.optim.Rprop,
    torch.optim.ASGD,
)


def default_optimizer(parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Plain SGD with ``lr=1e-2``, ``record_path``'s default."""
    return torch.optim.SGD(parameters, lr=1e-2)


@dataclass(frozen=True)
class OptimizerGroup:
    """Runs trained by one optimiser configuration.

    Attributes:
        factory: builds the group's optimiser from stacked parameters.
        name: the configuration, e.g. ``"SGD(lr=0.01, momentum=0.9)"``.
        runs: indices of the group's runs, ascending, int64, shape ``(R,)``.
    """

    factory: OptimizerFactory
    name: str
    runs: np.ndarray


def step(optimiser: torch.optim.Optimizer) -> None:
    """One step of an optimiser the caller's factory built; its failure (a learning rate
    whose arithmetic overflows the compute dtype, say) is the `optimizer` argument's error."""
    try:
        optimiser.step()
    except RuntimeError as error:
        raise FastsurfaceError(f"`optimizer` fails to step the parameters: {error}") from error


def group_runs(optimizer: OptimizerFactory | Sequence[OptimizerFactory] | None, count: int) -> list[OptimizerGroup]:
    """Check ``optimizer`` (one factory for all ``count`` runs, or one per run) and group
    the runs by the optimiser each factory builds, in order of first appearance."""
    if optimizer is None or callable(optimizer):  # one group: no pass over the runs
        factory = default_optimizer if optimizer is None else optimizer
        return [OptimizerGroup(factory, _configuration(factory)[1], np.arange(count, dtype=np.int64))]
    factories = _per_run(optimizer, count)
    probed: dict[int, tuple[str, str]] = {}  # id(factory) -> (configuration key, name)
    members: dict[str, list[int]] = {}
    first: dict[str, OptimizerFactory] = {}
    names: dict[str, str] = {}
    for run, factory in enumerate(factories):
        if id(factory) not in probed:
            probed[id(factory)] = _configuration(factory)
        key, name = probed[id(factory)]
        members.setdefault(key, []).append(run)
        first.setdefault(key, factory)
        names[key] = name
    return [OptimizerGroup(first[key], names[key], np.asarray(runs, dtype=np.int64)) for key, runs in members.items()]


def build(group: OptimizerGroup, tensors: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """The group's optimiser over ``tensors``, checked to hold exactly them."""
    optimiser = group.factory(tensors)  # type: ignore[arg-type]  # leaf tensors, as torch.optim accepts
    held = [p for g in optimiser.param_groups for p in g["params"]]
    if len(held) != len(tensors) or any(a is not b for a, b in zip(held, tensors, strict=True)):
        raise FastsurfaceError("`optimizer` must optimise exactly the parameters it is given, in one group")
    return optimiser


def _per_run(optimizer: Sequence[OptimizerFactory], count: int) -> Sequence[OptimizerFactory]:
    if isinstance(optimizer, Sequence) and not isinstance(optimizer, str):
        if len(optimizer) != count or not all(callable(f) for f in optimizer):
            raise FastsurfaceError(
                f"`optimizer` must be one factory or a sequence of one factory per run ({count}), "
                f"got a sequence of {len(optimizer)}"
            )
        return optimizer
    raise FastsurfaceError(
        "`optimizer` must be a factory such as lambda p: torch.optim.SGD(p, lr=1e-2), or one per run, "
        f"got {optimizer!r}"
    )


def _configuration(factory: OptimizerFactory) -> tuple[str, str]:
    """``(key, name)`` of the optimiser ``factory`` builds, from one built on a probe
    parameter; refuses optimisers whose update is not elementwise."""
    probe = nn.Parameter(torch.zeros(1))
    try:
        optimiser = factory([probe])
    except (TypeError, ValueError, RuntimeError) as error:
        raise FastsurfaceError(f"`optimizer` fails when given a parameter list: {error}") from error
    kind = type(optimiser)
    if kind not in ELEMENTWISE:
        accepted = ", ".join(k.__name__ for k in ELEMENTWISE)
        raise FastsurfaceError(
            f"`optimizer` must build an optimiser whose update is elementwise ({accepted}), so that stacked runs "
            f"stay independent; got {kind.__module__}.{kind.__name__}, which couples entries or is not known to "
            "fastsurface: train those runs one at a time with record_path"
        )
    if len(optimiser.param_groups) != 1:
        raise FastsurfaceError(f"`optimizer` must put its parameters in one group, got {len(optimiser.param_groups)}")
    settings = {k: v for k, v in optimiser.param_groups[0].items() if k != "params"}
    key = f"{kind.__name__} {sorted((k, repr(v)) for k, v in settings.items())}"
    return key, _name(kind, settings)


def _name(kind: type[torch.optim.Optimizer], settings: dict[str, object]) -> str:
    """The class with the settings that differ from its defaults (``lr`` always)."""
    defaults = {
        name: p.default for name, p in inspect.signature(kind.__init__).parameters.items() if name not in ("self",)
    }
    shown = [
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value!r}"
        for name, value in settings.items()
        if name == "lr" or (name in defaults and _differs(value, defaults[name]))
    ]
    return f"{kind.__name__}({', '.join(shown)})"


def _differs(value: object, default: object) -> bool:
    try:
        return bool(value != default)
    except (RuntimeError, TypeError, ValueError):  # tensors, tuples of tensors
        return True
