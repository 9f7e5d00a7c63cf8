"""``loss_landscapes`` model wrappers: which modules hold the parameters, and the forward pass."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from fastsurface._support.copying import private_copy
from fastsurface.errors import FastsurfaceError


class ModelWrapper(ABC):
    """The parameters of ``modules`` (in order) and a ``forward`` through them.

    Unlike the package, ``get_module_parameters`` returns a plain list of the parameter
    tensors (the package returns its own ``ModelParameters`` vector type).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)

    def get_modules(self) -> list[nn.Module]:
        return self.modules

    def get_module_parameters(self) -> list[nn.Parameter]:
        return [p for module in self.modules for p in module.parameters()]

    def train(self, mode: bool = True) -> ModelWrapper:
        for module in self.modules:
            module.train(mode)
        return self

    def eval(self) -> ModelWrapper:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> ModelWrapper:
        for p in self.get_module_parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self) -> ModelWrapper:
        for module in self.modules:
            module.zero_grad()
        return self

    def parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain.from_iterable(module.parameters() for module in self.modules)

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return itertools.chain.from_iterable(module.named_parameters() for module in self.modules)

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Any:
        """The model's output for inputs ``x``."""


class SimpleModelWrapper(ModelWrapper):
    """One ``nn.Module``, called on the inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__([model])

    def forward(self, x: torch.Tensor) -> Any:
        return self.modules[0](x)


class GeneralModelWrapper(ModelWrapper):
    """Parameters from ``modules``; output ``forward_fn(model, x)``."""

    def __init__(
        self, model: Any, modules: Sequence[nn.Module], forward_fn: Callable[[Any, torch.Tensor], Any]
    ) -> None:
        super().__init__(modules)
        self.model = model
        self.forward_fn = forward_fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_fn(self.model, x)


def rand_u_like(shapes: Sequence[torch.Size], dtype: torch.dtype) -> list[torch.Tensor]:
    """Uniform [0, 1) tensors of ``shapes``, as the package's ``rand_u_like`` draws them: one
    ``torch.rand`` per shape, in order, in ``dtype`` (the first parameter's), on the CPU,
    from torch's global generator."""
    return [torch.rand(size=shape, dtype=dtype) for shape in shapes]


def private_wrapper(model: nn.Module | ModelWrapper) -> ModelWrapper:
    """A copy of ``model``'s wrapper, with its modules, whose parameters do not require grad
    (as the package's ``wrap_model`` leaves the caller's)."""
    wrapper = wrap_model(model)
    inner = getattr(wrapper, "model", None)
    copied = private_copy(wrapper, [*wrapper.modules, *([inner] if isinstance(inner, nn.Module) else [])])
    return copied.requires_grad_(False)


def wrap_model(model: nn.Module | ModelWrapper) -> ModelWrapper:
    """``model`` as a wrapper. Unlike the package, it does not switch off ``requires_grad``."""
    if isinstance(model, ModelWrapper):
        return model
    if isinstance(model, nn.Module):
        return SimpleModelWrapper(model)
    raise FastsurfaceError(f"`model` must be a torch.nn.Module or a ModelWrapper, got {type(model).__name__}")


__all__ = ["GeneralModelWrapper", "ModelWrapper", "SimpleModelWrapper", "wrap_model"]
