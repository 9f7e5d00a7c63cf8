"""Metrics beside the loss: per-sample functions the engine reduces like a loss.

A metric follows the loss contract (``(prediction, target) -> (S,)``), so every engine
path, reduction and device applies to it; each metric is one more pass over the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsurface.engine._losses import PerSampleLoss
from fastsurface.engine._stream import check_reusable
from fastsurface.engine.evaluate import grid_surface
from fastsurface.engine.options import EvalOptions
from fastsurface.errors import FastsurfaceError
from fastsurface.results import Surface


def accuracy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class of logits ``(S, C, ...)`` equals the integer target
    ``(S, ...)``, else 0.0, averaged over any extra dimensions; shape ``(S,)``."""
    if target.dtype.is_floating_point or target.shape != prediction.shape[:1] + prediction.shape[2:]:
        raise FastsurfaceError(
            "`accuracy` needs logits of shape (S, C, ...) and integer class targets of shape (S, ...); got "
            f"predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} of dtype {target.dtype}"
        )
    correct = (prediction.argmax(dim=1) == target).to(prediction.dtype)
    return correct.reshape(len(target), -1).mean(dim=1)


def metric_surfaces(
    model: nn.Module,
    data: object,
    w1: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    w2: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    *,
    metrics: Mapping[str, str | PerSampleLoss],
    **options: Any,
) -> dict[str, Surface]:
    """One surface per named metric on the same grid, plane and data.

    Args:
        model, data, w1, w2: as in ``loss_surface``.
        metrics: names to per-sample functions: ``"mse"``, ``"cross_entropy"``, ``accuracy``
            or any callable ``(prediction, target) -> (S,)``.
        options: ``plane`` and the evaluation options of ``loss_surface`` (not ``loss``),
            all checked before any work.

    Returns:
        ``{name: Surface}`` in the order of ``metrics``.

    >>> import fastsurface as fs
    >>> surfaces = metric_surfaces(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), [0.0, 1.0], [1.0],
    ...                            metrics={"mse": "mse", "mae": lambda p, t: (p - t).abs()[:, 0]})
    >>> list(surfaces), surfaces["mae"].loss.shape
    (['mse', 'mae'], (2, 1))
    """
    if not isinstance(metrics, Mapping) or not metrics:
        raise FastsurfaceError(
            f"`metrics` must be a non-empty mapping of names to per-sample functions, got {metrics!r}"
        )
    if "loss" in options:
        raise FastsurfaceError("`metrics` names every per-sample function; pass none as `loss`")
    check_reusable("data", data, len(metrics), "once per metric")
    plane = options.pop("plane", None)
    per_metric = [EvalOptions.from_keywords({**options, "loss": metric}) for metric in metrics.values()]
    return {
        name: grid_surface(model, data, w1, w2, plane, chosen) for name, chosen in zip(metrics, per_metric, strict=True)
    }
