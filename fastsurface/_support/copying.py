"""Private copies of the caller's models: fastsurface never runs its work on them."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TypeVar

import torch
from torch import nn

from fastsurface.errors import FastsurfaceError

T = TypeVar("T")
# Nesting of lists, tuples and dicts searched for autograd tensors.
_CONTAINER_DEPTH = 3


def private_copy(obj: T, modules: Iterable[nn.Module] = ()) -> T:
    """A deep copy of ``obj``, also when one of its modules holds a tensor made by autograd.

    ``copy.deepcopy`` refuses non-leaf tensors, and a module keeps one as a plain attribute
    after a forward pass with gradients on when a hook computes its weight (the original
    ``nn.utils.weight_norm`` and ``nn.utils.spectral_norm``), or in a list or dict when it
    records activations. The copy gets detached clones of those; a model that still
    cannot be copied raises a ``FastsurfaceError``.

    Args:
        obj: an ``nn.Module``, or an object holding modules (a model wrapper).
        modules: the modules inside ``obj`` when it is not a module itself.
    """
    roots = [obj] if isinstance(obj, nn.Module) else list(modules)
    memo: dict[int, object] = {}
    for root in roots:
        for module in root.modules():
            _detach_into(memo, vars(module).values())
    try:
        return copy.deepcopy(obj, memo)
    except (RuntimeError, TypeError) as error:  # a graph tensor deeper inside, a lock, an open file
        raise FastsurfaceError(
            f"`model` cannot be copied (fastsurface never runs on the caller's model): {error}"
        ) from error


def _detach_into(memo: dict[int, object], values: Iterable[object], depth: int = 0) -> None:
    """Map every tensor made by autograd among ``values`` (and inside their lists, tuples
    and dicts, such as a list of recorded activations) to a detached clone."""
    for value in values:
        if isinstance(value, torch.Tensor) and value.grad_fn is not None:
            memo[id(value)] = value.detach().clone()
        elif depth < _CONTAINER_DEPTH and isinstance(value, (list, tuple)):
            _detach_into(memo, value, depth + 1)
        elif depth < _CONTAINER_DEPTH and isinstance(value, dict):
            _detach_into(memo, value.values(), depth + 1)


def copy_inputs_if_written(module: nn.Module, x: torch.Tensor) -> bool:
    """Make ``module``, a private copy, copy its inputs before each forward pass if a
    forward pass writes into them (an ``inplace=True`` activation as its first layer, a
    custom forward's ``x.mul_(...)``), as seen on a copy of the example inputs ``x``.

    The engine feeds the same inputs to many forward passes (the probes, then every tile
    of points): the writes would compound from one to the next, and reach the data the
    caller keeps. A pre-hook on the copy restores "each pass sees the data as given"; the
    engine's sharing of layers (``fastsurface.engine._shared``) then stands aside, as for
    any hooked model. Writes show in the version counter, or in the values where
    ``.data`` hid them from it.

    Returns:
        Whether the hook was added.
    """
    probe = x.clone()
    version = probe._version
    with torch.no_grad():
        module(probe)
    if probe._version == version and torch.equal(probe, x):
        return False
    module.register_forward_pre_hook(_copied_inputs)
    return True


def _copied_inputs(_module: nn.Module, inputs: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(value.clone() if isinstance(value, torch.Tensor) else value for value in inputs)
