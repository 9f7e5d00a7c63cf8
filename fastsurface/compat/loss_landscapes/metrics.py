"""``loss_landscapes.metrics``: what is evaluated at each point of a landscape.

``Loss`` is evaluated vectorised over points; any other ``Metric`` subclass is called
point by point on a private copy of the model (see the package docstring).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastsurface.compat.loss_landscapes.model_wrapper import ModelWrapper


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


__all__ = ["Loss", "Metric", "MetricPipeline"]
