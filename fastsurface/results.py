"""What fastsurface computes: surfaces, optimiser paths in plane coordinates, critical points.

A leaf module: it imports nothing of the package, so loading a file or drawing a figure
never pulls in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True)
class Surface:
    """Losses on a grid of plane coordinates.

    ``loss[i, j]`` is the loss at ``(w1[i], w2[j])``: rows follow the first
    coordinate, columns the second.

    Attributes:
        w1: first coordinate's values, float64, shape ``(n1,)``.
        w2: second coordinate's values, float64, shape ``(n2,)``.
        loss_tensor: the losses as computed, float64 on the compute device, shape
            ``(n1, n2)``; use it to avoid a device-to-host copy.
        labels: names of the two coordinates (``("w1", "w2")`` for the seed model).
        loss_name: the per-sample loss, e.g. ``"mse"``.
        reduction: ``"mean"`` or ``"batch_mean"``.
        device: the device the losses were computed on, e.g. ``"cpu"``.
        dtype: compute dtype of the forward passes, e.g. ``"float32"``.
        samples: number of evaluation samples.
        batches: number of evaluation batches (what ``batch_mean`` averages over).
        seconds: wall-clock time of the evaluation.
        method: the engine path that ran, e.g. ``"vmap"``.
        tile_points: grid points evaluated together in one kernel call.
        train_mode: whether the model ran in training mode (``loss_surface``'s
            ``train_mode``).
    """

    w1: np.ndarray
    w2: np.ndarray
    loss_tensor: torch.Tensor = field(repr=False)
    labels: tuple[str, str]
    loss_name: str
    reduction: str
    device: str
    dtype: str
    samples: int
    batches: int
    seconds: float
    method: str
    tile_points: int
    train_mode: bool = False

    @cached_property
    def loss(self) -> np.ndarray:
        """The losses as a float64 numpy array of shape ``(len(w1), len(w2))``."""
        return self.loss_tensor.detach().cpu().numpy()

    def argmin(self) -> tuple[float, float, float]:
        """``(w1, w2, loss)`` at the lowest finite loss on the grid."""
        loss = np.where(np.isfinite(self.loss), self.loss, np.inf)
        i, j = np.unravel_index(np.argmin(loss), loss.shape)
        return float(self.w1[i]), float(self.w2[j]), float(self.loss[i, j])


@dataclass(frozen=True)
class Trajectory:
    """An optimiser's path in plane coordinates, with the test loss at each point.

    Attributes:
        w1, w2: coordinates, float64, shape ``(P,)``.
        loss: test loss at each point, computed by the surface engine with the same
            reduction, float64, shape ``(P,)``.
        step: optimiser steps taken before each point, int64, shape ``(P,)``.
        labels: names of the two coordinates.
        reduction: reduction of ``loss``.
        record: how the points were chosen: ``"epoch"`` (``epochs + 1`` points),
            ``"step"`` (one per step, plus the start) or ``"path"`` (a recorded
            parameter path projected onto the plane by ``project_path``).
    """

    w1: np.ndarray
    w2: np.ndarray
    loss: np.ndarray
    step: np.ndarray
    labels: tuple[str, str]
    reduction: str
    record: str


CRITICAL_KINDS = ("minimum", "maximum", "saddle", "degenerate")


@dataclass(frozen=True)
class CriticalPoint:
    """A point of the plane where the loss's gradient vanishes.

    Attributes:
        w1, w2: plane coordinates (the surface's first and second axis).
        loss: the exact loss there, float64.
        kind: ``"minimum"``, ``"maximum"``, ``"saddle"`` or ``"degenerate"`` (an
            eigenvalue within a relative 1e-6 of zero).
        eigenvalues: the Hessian's eigenvalues in ascending order.
        gradient_norm: the gradient's Euclidean norm there (close to 0).
        iterations: Newton steps taken from the grid candidate.
    """

    w1: float
    w2: float
    loss: float
    kind: str
    eigenvalues: tuple[float, float]
    gradient_norm: float
    iterations: int
