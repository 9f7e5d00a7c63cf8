"""``loss_landscapes.metrics``: what is evaluated at each point of a landscape.

``Loss`` (and a ``MetricPipeline`` of them) is evaluated vectorised over points; any
other ``Metric``, including a subclass of ``Loss`` that overrides ``__call__``, is called
point by point on a private copy of the model (see the package docstring). The package's
``LossGradient`` and ``ExpectedReturnMetric`` fail in 3.0.6 itself and are not provided.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fastsurface.compat.loss_landscapes.model_wrapper import ModelWrapper, rand_u_like


class Metric(ABC):
    """A quantity computed from a wrapped model, ``metric(model_wrapper)``."""

    @abstractmethod
    def __call__(self, model_wrapper: ModelWrapper) -> Any:
        """The quantity at the wrapper's current parameters."""


class MetricPipeline(Metric):
    """Several metrics, evaluated in order; a point's value is their tuple."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = list(metrics)

    def __call__(self, model_wrapper: ModelWrapper) -> tuple[Any, ...]:
        return tuple(metric(model_wrapper) for metric in self.metrics)


class Loss(Metric):
    """``loss_fn(model(inputs), target)`` as a Python float: the whole batch at once.

    Args:
        loss_fn: e.g. ``torch.nn.MSELoss()`` or ``torch.nn.CrossEntropyLoss()``; any
            callable returning a one-element tensor.
        inputs: the model's inputs, shape ``(N, ...)``.
        target: the targets, as ``loss_fn`` expects them.
    """

    def __init__(
        self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], inputs: torch.Tensor, target: torch.Tensor
    ) -> None:
        self.loss_fn = loss_fn
        self.inputs = inputs
        self.target = target

    def __call__(self, model_wrapper: ModelWrapper) -> float:
        return self.loss_fn(model_wrapper.forward(self.inputs), self.target).item()


class LossPerturbations(Metric):
    """Loss changes along ``n_directions`` random directions from the current point
    (Schuurmans et al.), as the package computes them: each direction is a fresh
    ``rand_u_like`` draw (uniform, unscaled) added to the parameters and removed again;
    shape ``(n_directions,)``. ``alpha`` is stored and, as in the package, unused.
    """

    def __init__(
        self,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        target: torch.Tensor,
        n_directions: int,
        alpha: float,
    ) -> None:
        self.loss_fn = loss_fn
        self.inputs = inputs
        self.target = target
        self.n_directions = n_directions
        self.alpha = alpha

    def __call__(self, model_wrapper: ModelWrapper) -> np.ndarray:
        parameters = model_wrapper.get_module_parameters()
        start_loss = self._loss(model_wrapper)
        changes = []
        for _ in range(self.n_directions):
            direction = rand_u_like([p.shape for p in parameters], parameters[0].dtype)
            _shift(parameters, direction, 1)
            changes.append(self._loss(model_wrapper) - start_loss)
            _shift(parameters, direction, -1)
        return np.array(changes)

    def _loss(self, model_wrapper: ModelWrapper) -> float:
        return self.loss_fn(model_wrapper.forward(self.inputs), self.target).item()


def _shift(parameters: list[torch.nn.Parameter], direction: list[torch.Tensor], sign: int) -> None:
    with torch.no_grad():
        for parameter, step in zip(parameters, direction, strict=True):
            parameter.add_(step.to(parameter.device), alpha=sign)


__all__ = ["Loss", "LossPerturbations", "Metric", "MetricPipeline"]
