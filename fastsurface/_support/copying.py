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
