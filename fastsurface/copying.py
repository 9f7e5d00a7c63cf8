"""Private copies of the caller's models: fastsurface never runs its work on them."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


def private_copy(obj: T, modules: Iterable[nn.Module] = ()) -> T:
    """A deep copy of ``obj``, also when one of its modules holds a tensor made by autograd.

    ``copy.deepcopy`` refuses non-leaf tensors, and a module keeps one as a plain attribute
    after a forward pass with gradients on when a hook computes its weight (the original
    ``nn.utils.weight_norm`` and ``nn.utils.spectral_norm``). The hook recomputes that
    tensor before every forward pass, so the copy gets a detached clone of it.

    Args:
        obj: an ``nn.Module``, or an object holding modules (a model wrapper).
        modules: the modules inside ``obj`` when it is not a module itself.
    """
    roots = [obj] if isinstance(obj, nn.Module) else list(modules)
    memo: dict[int, object] = {}
    for root in roots:
        for module in root.modules():
            for value in vars(module).values():
                if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                    memo[id(value)] = value.detach().clone()
    return copy.deepcopy(obj, memo)
