"""Losses along a line through a model's parameters, by the engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from fastsurface.engine.evaluate import point_losses
from fastsurface.engine.options import EvalOptions
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane


class Line(NamedTuple):
    """Losses along a line: ``loss[k]`` at coordinate ``t[k]`` (float64, shape ``(T,)``)."""

    t: np.ndarray
    loss: np.ndarray


def loss_line(model: nn.Module, data: object, t: Sequence[float] | np.ndarray, *, line: Plane, **kwargs: Any) -> Line:
    """Loss at ``θ₀ + t_k·d₁`` for every ``t_k``, by the engine (``evaluate_points``).

    Args:
        line: a plane; only its first direction is used (``b = 0``).
        t: coordinates along the line, 1-D, finite.
        **kwargs: evaluation options (``loss``, ``reduction``, ``batch_size``, ``device``,
            ``dtype``, ...) as in ``evaluate_points``.

    >>> from fastsurface import ANN, piecewise_dataset, random_line
    >>> model = ANN(1, 2, 1)
    >>> line = loss_line(model, piecewise_dataset(100), [-1.0, 0.0, 1.0], line=random_line(model), device="cpu")
    >>> line.loss.shape
    (3,)
    """
    options = EvalOptions.from_keywords(kwargs)
    try:
        coordinates = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise FastsurfaceError(f"`t` must be numbers, got {t!r}") from error
    if coordinates.ndim != 1 or len(coordinates) == 0:
        raise FastsurfaceError(f"`t` must be a non-empty 1-D sequence of coordinates, got shape {coordinates.shape}")
    points = np.stack([coordinates, np.zeros_like(coordinates)], axis=1)
    evaluation = point_losses(model, line, data, points, options)
    return Line(coordinates, evaluation.loss.cpu().numpy())
