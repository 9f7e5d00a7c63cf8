"""Per-sample loss functions: the contract the engine reduces over.

A loss maps predictions ``(S, ...)`` and targets ``(S, ...)`` to per-sample losses
of shape ``(S,)``; the engine's ``reduction`` turns those into one number per point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastsurface.errors import FastsurfaceError

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Loss:
    """A named per-sample loss and the target shape it requires.

    Attributes:
        name: ``"mse"``, ``"cross_entropy"`` or the callable's name.
        per_sample: ``(prediction, target) -> (S,)``; vmap-safe.
        check_shapes: raises ``FastsurfaceError`` when predictions and targets do not fit
            (called on a few samples).
        check_targets: raises ``FastsurfaceError`` when target values do not fit the
            predictions (called on every chunk of targets, with a few samples' predictions).
    """

    name: str
    per_sample: PerSampleLoss
    check_shapes: Callable[[torch.Tensor, torch.Tensor], None]
    check_targets: Callable[[torch.Tensor, torch.Tensor], None] = lambda _prediction, _target: None


def squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over each sample's elements of ``(prediction - target)²``; shape ``(S,)``."""
    return (prediction - target).square().reshape(len(target), -1).mean(dim=1)


def cross_entropy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits ``(S, C, ...)`` against class indices ``(S, ...)``: per sample,
    the mean over its positions (as ``squared_error`` means over elements); shape ``(S,)``."""
    return F.cross_entropy(prediction, target, reduction="none").reshape(len(target), -1).mean(dim=1)


def resolve_loss(loss: str | PerSampleLoss) -> Loss:
    """``"mse"``, ``"cross_entropy"`` or a callable ``(prediction, target) -> (S,)``."""
    if loss == "mse":
        return Loss("mse", squared_error, _same_shape)
    if loss == "cross_entropy":
        return Loss("cross_entropy", cross_entropy, _class_indices, _class_range)
    if callable(loss):
        return Loss(getattr(loss, "__name__", type(loss).__name__), loss, _per_sample_output(loss))
    raise FastsurfaceError(
        f"`loss` must be 'mse', 'cross_entropy' or a callable (prediction, target) -> (S,), got {loss!r}"
    )


def _same_shape(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if not target.dtype.is_floating_point:
        raise FastsurfaceError(
            f"`data`: mean squared error needs real-valued targets, got {target.dtype} (integer class labels are "
            "for loss='cross_entropy'; for numbers, convert the targets to floating point)"
        )
    if prediction.shape != target.shape:
        raise FastsurfaceError(
            f"`data`: the model predicts shape {tuple(prediction.shape)[1:]} per sample but the targets have "
            f"shape {tuple(target.shape)[1:]}; a squared error between them would broadcast (e.g. (B, 1) against "
            "(B,) gives (B, B)) and compute a different loss. Give targets the predictions' shape, e.g. "
            "y.reshape(-1, 1), or pass the data as an (x, y) pair of arrays."
        )


def _class_indices(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if (
        target.dtype.is_floating_point
        or prediction.ndim < 2
        or target.shape != prediction.shape[:1] + prediction.shape[2:]
    ):
        raise FastsurfaceError(
            "`data`: cross-entropy needs logits of shape (S, C, ...) and integer class targets of shape (S, ...); "
            f"got predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} of dtype {target.dtype}"
        )


def _class_range(prediction: torch.Tensor, target: torch.Tensor) -> None:
    classes = prediction.shape[1]
    if bool(((target < 0) | (target >= classes)).any()):
        raise FastsurfaceError(
            f"`data`: cross-entropy class targets must lie in [0, {classes}) for the model's {classes} logits, "
            f"got values from {int(target.min())} to {int(target.max())}"
        )


def _per_sample_output(loss: PerSampleLoss) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def check(prediction: torch.Tensor, target: torch.Tensor) -> None:
        try:
            values = loss(prediction, target)
            shape, dtype = tuple(values.shape), values.dtype
        except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise FastsurfaceError(
                f"`loss` fails on the model's predictions {tuple(prediction.shape)} and the targets "
                f"{tuple(target.shape)} ({target.dtype}): {error}"
            ) from error
        if not dtype.is_floating_point:
            raise FastsurfaceError(
                f"`loss` must return real floating-point losses, got {dtype} (a complex or integer loss has no "
                "mean the engine can take without losing part of it)"
            )
        if shape != (len(prediction),):
            raise FastsurfaceError(
                f"`loss` must return one loss per sample, shape ({len(prediction)},), got shape {shape}"
            )

    return check
