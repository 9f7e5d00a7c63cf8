"""Per-sample loss functions: the contract the engine reduces over.

A loss maps predictions ``(S, ...)`` and targets ``(S, ...)`` to per-sample losses
of shape ``(S,)``; the engine's ``reduction`` turns those into one number per point.
Several losses combined (``combine``) are evaluated in one pass over the data: the
engine then sums a vector of them per point.

What ``resolve_loss`` accepts:

- the strings ``"mse"``, ``"cross_entropy"``, ``"nll"`` and ``"accuracy"`` (``STRINGS``);
- torch's own loss modules that take ``(input, target)`` (``MODULES``): their per-sample
  form is their ``reduction='none'`` values averaged over each sample's elements (summed,
  for ``KLDivLoss(reduction='batchmean')``), so that the mean over samples equals the
  module's value on the whole data. Their options (``delta``, ``beta``, ``margin``,
  ``label_smoothing``, ``pos_weight``, per-class or per-element ``weight``, ...) are
  kept. Refused, because the module's value is then no mean of per-sample losses:
  ``reduction='sum'`` or ``'none'``; ``weight`` of ``CrossEntropyLoss`` and ``NLLLoss``
  (a mean weighted by each target's class weight, whose denominator is the data's total
  weight); a non-default ``ignore_index`` (a mean over the targets not ignored); a
  ``weight`` with a sample axis. ``nn.MSELoss()``, ``nn.CrossEntropyLoss()`` and
  ``nn.NLLLoss()`` with their defaults are the strings ``"mse"``, ``"cross_entropy"``
  and ``"nll"``;
- any other callable ``(prediction, target) -> (S,)``;
- a ``Loss``, as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fastsurface.errors import FastsurfaceError

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Check = Callable[[torch.Tensor, torch.Tensor], None]


def _no_check(_prediction: torch.Tensor, _target: torch.Tensor) -> None:
    """Any targets fit."""


@dataclass(frozen=True)
class Loss:
    """A named per-sample loss, the target shape it requires and which way is better.

    Attributes:
        name: ``"mse"``, ``"cross_entropy"``, ``"nll"``, ``"accuracy"``, the module's class
            name or the callable's name.
        per_sample: ``(prediction, target) -> (S,)``; vmap-safe. Combined losses give
            ``(S, W)``, one column per part (a part's ``(S, K)`` values take ``K``).
        check_shapes: raises ``FastsurfaceError`` when predictions and targets do not fit
            (called on a few samples).
        check_targets: raises ``FastsurfaceError`` when target values do not fit the
            predictions (called on every chunk of targets, with a few samples' predictions).
        metric: what the values are, named in summaries: ``"loss"``, ``"accuracy"``, or
            the name a caller gave (``metric_surfaces``' keys).
        higher_is_better: whether a higher value is better (accuracy), else lower.
        parts: the losses a combined objective evaluates in one pass (``combine``), else
            empty.
        rowwise: whether each sample's value depends on its own rows of predictions and
            targets alone (fastsurface's own losses and torch's loss modules; a caller's
            callable is not assumed to be), so ``tile_sums`` may run it once on a tile's
            points stacked as samples.
    """

    name: str
    per_sample: PerSampleLoss
    check_shapes: Check
    check_targets: Check = _no_check
    metric: str = "loss"
    higher_is_better: bool = False
    parts: tuple[Loss, ...] = ()
    rowwise: bool = False

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-sample values; a ``Loss`` is itself a per-sample loss."""
        return self.per_sample(prediction, target)

    def weighted_sum(self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``Σ_s weight_s · loss_s`` over the samples, weights of shape ``(S,)``, in the
        predictions' dtype: shape ``()`` for one loss, ``(K,)`` for per-sample values
        ``(S, K)``, ``(W,)`` for combined losses (each part's sums computed as they are
        alone, so a combined pass gives each part's numbers bit for bit)."""
        if self.parts:
            return torch.cat([part.weighted_sum(prediction, target, weight).reshape(-1) for part in self.parts])
        values = self.per_sample(prediction, target)
        return values @ weight if values.ndim == 1 else weight @ values

    def tile_sums(self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``weighted_sum`` at each of a tile's ``T`` points: predictions ``(T, S, ...)``
        against the points' common targets ``(S, ...)`` and weights ``(S,)``; shape ``(T,)``,
        or ``(T, K)`` / ``(T, W)`` as ``weighted_sum``'s. A ``rowwise`` loss runs once over
        the ``T·S`` rows (under ``vmap``, its few operations cost about as much again in
        overhead per tile: measured on an 8 → 32 → 32 → 1 MLP's surface, 0.34 s against
        0.24 s); any other loss runs under ``vmap``."""
        if not self.rowwise:
            return vmap(self.weighted_sum, in_dims=(0, None, None))(prediction, target, weight)
        count = len(prediction)
        if self.parts:
            sums = [part.tile_sums(prediction, target, weight).reshape(count, -1) for part in self.parts]
            return torch.cat(sums, dim=1)
        targets = target.expand(count, *target.shape).reshape(-1, *target.shape[1:])
        values = self.per_sample(prediction.reshape(-1, *prediction.shape[2:]), targets)
        values = values.reshape(count, len(target), *values.shape[1:])
        return values @ weight if values.ndim == 2 else weight @ values


def combine(losses: Sequence[Loss]) -> Loss:
    """Several losses as one objective, for one pass over the data: its ``weighted_sum``
    is the parts' sums in order, shape ``(W,)`` (``W`` the number of parts when each
    gives one value per sample)."""
    parts = tuple(losses)
    return Loss(
        name="+".join(part.name for part in parts),
        per_sample=_Together(tuple(part.per_sample for part in parts)),
        check_shapes=_Every(tuple(part.check_shapes for part in parts)),
        check_targets=_Every(tuple(part.check_targets for part in parts)),
        parts=parts,
        rowwise=all(part.rowwise for part in parts),
    )


@dataclass(frozen=True)
class _Together:
    """The parts' per-sample values side by side, ``(S, W)``; equal (and hashed) by its
    functions, so a compiled kernel is reused for the same losses."""

    functions: tuple[PerSampleLoss, ...]

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = [function(prediction, target) for function in self.functions]
        return torch.cat([value.reshape(len(value), -1) for value in values], dim=1)


@dataclass(frozen=True)
class _Every:
    """Every part's check, in order."""

    checks: tuple[Check, ...]

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        for check in self.checks:
            check(prediction, target)


def squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over each sample's elements of ``(prediction - target)²``; shape ``(S,)``."""
    return _mean_per_sample((prediction - target).square(), len(target))


def _mean_per_sample(values: torch.Tensor, samples: int) -> torch.Tensor:
    """The mean of each sample's elements of ``values`` (``(S, ...)``), shape ``(S,)``: a
    sample's one element itself when it has one, the same value without the division per
    element that a fused kernel would otherwise keep (it costs a third of the seed's
    compiled training step)."""
    flat = values.reshape(samples, -1)
    return flat[:, 0] if flat.shape[1] == 1 else flat.mean(dim=1)


def cross_entropy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits ``(S, C, ...)`` against class indices ``(S, ...)``: per sample,
    the mean over its positions (as ``squared_error`` means over elements); shape ``(S,)``."""
    return _mean_per_sample(F.cross_entropy(prediction, target, reduction="none"), len(target))


def negative_log_likelihood(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-prediction[s, target[s]]`` for log-probabilities ``(S, C, ...)`` (a model ending in
    ``nn.LogSoftmax(dim=1)``) against class indices ``(S, ...)``, per sample the mean over
    its positions; shape ``(S,)``."""
    return _mean_per_sample(F.nll_loss(prediction, target, reduction="none"), len(target))


def accuracy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class of logits ``(S, C, ...)`` equals the integer target
    ``(S, ...)``, else 0.0, averaged over any extra dimensions; shape ``(S,)``. Higher is
    better: a surface of it is an accuracy surface (``Surface.best`` is its highest point)."""
    _class_indices("accuracy")(prediction, target)
    correct = (prediction.argmax(dim=1) == target).to(prediction.dtype)
    return _mean_per_sample(correct, len(target))


def _same_shape(what: str, prediction: torch.Tensor, target: torch.Tensor) -> None:
    if not target.dtype.is_floating_point:
        raise FastsurfaceError(
            f"`data`: {what} needs real-valued targets, got {target.dtype} (integer class labels are "
            "for loss='cross_entropy'; for numbers, convert the targets to floating point)"
        )
    if prediction.shape != target.shape:
        advice = (
            "The model returns one value per sample as a (B,) tensor, and 1-D targets of a pair are read as "
            "(n, 1): have the model return (B, 1) (drop a final squeeze or Flatten(0))"
            if prediction.dim() == 1 and target.shape[1:] == (1,)
            else "Give targets the predictions' shape, e.g. y.reshape(-1, 1), or pass the data as an (x, y) pair "
            "of arrays"
        )
        raise FastsurfaceError(
            f"`data`: the model predicts shape {tuple(prediction.shape)[1:]} per sample but the targets have "
            f"shape {tuple(target.shape)[1:]}; {what} between them would broadcast (e.g. (B, 1) against "
            f"(B,) gives (B, B)) and compute a different loss. {advice}."
        )


def _integer_labels(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if target.dtype.is_floating_point or target.shape != prediction.shape:
        raise FastsurfaceError(
            "`data`: MultiLabelMarginLoss needs integer class labels of the predictions' shape (S, C), padded "
            f"with -1; got predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} of dtype "
            f"{target.dtype}"
        )


def _class_indices(what: str) -> Check:
    def check(prediction: torch.Tensor, target: torch.Tensor) -> None:
        if (
            target.dtype.is_floating_point
            or prediction.ndim < 2
            or target.shape != prediction.shape[:1] + prediction.shape[2:]
        ):
            raise FastsurfaceError(
                f"`data`: {what} needs scores of shape (S, C, ...) and integer class targets of shape (S, ...); "
                f"got predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} of dtype {target.dtype}"
            )

    return check


def _class_range(what: str) -> Check:
    def check(prediction: torch.Tensor, target: torch.Tensor) -> None:
        classes = prediction.shape[1]
        if bool(((target < 0) | (target >= classes)).any()):
            raise FastsurfaceError(
                f"`data`: {what} class targets must lie in [0, {classes}) for the model's {classes} outputs, "
                f"got values from {int(target.min())} to {int(target.max())}"
            )

    return check


def _classes(name: str, function: PerSampleLoss, what: str, metric: str = "loss", higher: bool = False) -> Loss:
    return Loss(name, function, _class_indices(what), _class_range(what), metric, higher, rowwise=True)


# The strings `loss` accepts, by name.
_NAMED: dict[str, Loss] = {
    "mse": Loss("mse", squared_error, lambda p, t: _same_shape("mean squared error", p, t), rowwise=True),
    "cross_entropy": _classes("cross_entropy", cross_entropy, "cross-entropy"),
    "nll": _classes("nll", negative_log_likelihood, "the negative log-likelihood"),
    "accuracy": _classes("accuracy", accuracy, "accuracy", "accuracy", higher=True),
}
STRINGS = tuple(_NAMED)
# torch's loss modules by how their targets must fit: class indices; real values of the
# predictions' shape; integer labels of the predictions' shape (MultiLabelMarginLoss).
_CLASS_MODULES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss)
_ELEMENTWISE_MODULES = (
    nn.MSELoss,
    nn.L1Loss,
    nn.SmoothL1Loss,
    nn.HuberLoss,
    nn.BCELoss,
    nn.BCEWithLogitsLoss,
    nn.KLDivLoss,
    nn.PoissonNLLLoss,
    nn.SoftMarginLoss,
    nn.HingeEmbeddingLoss,
    nn.MultiLabelSoftMarginLoss,
)
MODULES: tuple[type[nn.Module], ...] = (*_CLASS_MODULES, *_ELEMENTWISE_MODULES, nn.MultiLabelMarginLoss)
_DEFAULT_IGNORE_INDEX = -100


def resolve_loss(loss: object, argument: str = "loss") -> Loss:
    """The ``Loss`` for a string, a torch loss module, a callable ``(prediction, target) ->
    (S,)`` or a ``Loss`` (see the module's docstring); ``argument`` names it in errors."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in _NAMED:
        return _NAMED[loss]
    if loss is accuracy:
        return _NAMED["accuracy"]
    if isinstance(loss, MODULES) and type(loss) in MODULES:
        return _module_loss(loss, argument)
    if callable(loss) and not isinstance(loss, (str, type)) and type(loss).__module__ != "torch.nn.modules.loss":
        name = getattr(loss, "__name__", type(loss).__name__)
        return Loss(name, loss, _per_sample_output(loss, argument))
    modules = ", ".join(f"nn.{module.__name__}" for module in MODULES)
    raise FastsurfaceError(
        f"`{argument}` must be one of the strings {', '.join(map(repr, STRINGS))} ('accuracy' is fs.accuracy), "
        f"one of torch's loss modules {modules} (an instance, e.g. nn.CrossEntropyLoss()), or a callable "
        f"(prediction, target) -> (S,) of per-sample losses; got {loss!r:.200}"
    )


def _module_loss(module: nn.Module, argument: str) -> Loss:
    """A torch loss module's per-sample form, or a refusal of the options that have none."""
    kind = type(module).__name__
    reduction = getattr(module, "reduction", None)
    summed = isinstance(module, nn.KLDivLoss) and reduction == "batchmean"
    if reduction != "mean" and not summed:
        raise FastsurfaceError(
            f"`{argument}`: {kind}(reduction={reduction!r}) is not a mean over samples; fastsurface averages "
            "each sample's losses itself and reduces over samples with `reduction` ('mean' or 'batch_mean'): "
            f"pass {kind}() with its default reduction='mean' (the surface then equals its value on all the data)"
        )
    if isinstance(module, (nn.CrossEntropyLoss, nn.NLLLoss)):
        if module.weight is not None:
            raise FastsurfaceError(
                f"`{argument}`: {kind}(weight=...) averages with each target's class weight as the denominator, "
                "which is no mean of per-sample losses; for the mean of weighted per-sample losses pass a "
                f"callable, e.g. lambda p, t: F.{'cross_entropy' if kind == 'CrossEntropyLoss' else 'nll_loss'}"
                "(p, t, weight=w, reduction='none')"
            )
        if module.ignore_index != _DEFAULT_IGNORE_INDEX:
            raise FastsurfaceError(
                f"`{argument}`: {kind}(ignore_index={module.ignore_index}) averages over the targets not ignored, "
                "which is no mean of per-sample losses; drop the ignored samples from the data, or pass a callable "
                "that gives each sample its loss"
            )
        plain = not isinstance(module, nn.CrossEntropyLoss) or module.label_smoothing == 0.0
        if plain:  # the same function as the string, so the same numbers and the same name
            return _NAMED["cross_entropy" if isinstance(module, nn.CrossEntropyLoss) else "nll"]
    if type(module) is nn.MSELoss:
        return _NAMED["mse"]
    function = _ModuleLoss(module, summed, argument)
    if isinstance(module, _CLASS_MODULES):
        checks = _Every((_class_range(kind), function.check_weights))
        return Loss(kind, function, _class_indices(kind), checks, rowwise=True)
    if isinstance(module, nn.MultiLabelMarginLoss):
        return Loss(kind, function, _Every((_integer_labels, function.check_weights)), rowwise=True)
    shapes = _Every((lambda p, t: _same_shape(kind, p, t), function.check_weights))
    return Loss(kind, function, shapes, rowwise=True)


class _ModuleLoss:
    """A torch loss module's per-sample form: its ``reduction='none'`` values, averaged (or
    summed, for ``KLDivLoss`` with ``'batchmean'``) over each sample's elements; shape
    ``(S,)``. Runs a private copy, with its tensors (``weight``, ``pos_weight``) in the
    predictions' device and floating dtype."""

    def __init__(self, module: nn.Module, summed: bool, argument: str) -> None:
        self.module = copy.deepcopy(module)
        self.argument = argument
        self.module.reduction = "none"  # type: ignore[assignment]  # a plain attribute of torch's losses
        self.tensors = dict(self.module.named_buffers())
        self.summed = summed
        self.__name__ = type(module).__name__

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tensors = {
            name: tensor.to(prediction.device, prediction.dtype if tensor.is_floating_point() else tensor.dtype)
            for name, tensor in self.tensors.items()
        }
        values = functional_call(self.module, tensors, (prediction, target)).reshape(len(target), -1)
        return values.sum(dim=1) if self.summed else values.mean(dim=1)

    def check_weights(self, prediction: torch.Tensor, _target: torch.Tensor) -> None:
        """Refuse a ``weight`` with a sample axis: it cannot follow the samples into chunks."""
        for name, tensor in self.tensors.items():
            if tensor.ndim >= prediction.ndim and tensor.shape[0] != 1:
                raise FastsurfaceError(
                    f"`{self.argument}`: {self.__name__}'s {name} has shape {tuple(tensor.shape)}, with a sample "
                    f"axis against predictions {tuple(prediction.shape)}; per-sample weights cannot follow "
                    "the data through fastsurface's chunks: give weights of one sample's shape (e.g. per class), "
                    "or weigh inside a callable loss"
                )


def by_class(loss: Loss | None) -> Loss:
    """``loss`` split by class, for scores ``(S, C)`` and class indices ``(S,)``: per-sample
    values ``(S, C)`` holding sample ``s``'s loss in column ``target[s]`` and 0 elsewhere,
    so that a weighted sum gives each class's share; for ``None``, the one-hot targets,
    whose weighted sums count each class's samples."""
    what = "a per-class metric"
    shapes: tuple[Check, ...] = (_class_indices(what), _one_label_per_sample)
    targets: tuple[Check, ...] = (_class_range(what),)
    if loss is None:
        return Loss("samples by class", _ByClass(None), _Every(shapes), _Every(targets), rowwise=True)
    return Loss(
        f"{loss.name} by class",
        _ByClass(loss.per_sample),
        _Every((*shapes, loss.check_shapes)),
        _Every((*targets, loss.check_targets)),
        loss.metric,
        loss.higher_is_better,
        rowwise=loss.rowwise,
    )


@dataclass(frozen=True)
class _ByClass:
    """Per-sample values spread over the columns of the samples' classes, ``(S, C)``."""

    function: PerSampleLoss | None

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(prediction.shape[1], device=target.device)
        one_hot = (target[:, None] == classes).to(prediction.dtype)  # no data-dependent check: compiles whole
        return one_hot if self.function is None else self.function(prediction, target)[:, None] * one_hot


def _one_label_per_sample(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.ndim != 2 or target.ndim != 1:
        raise FastsurfaceError(
            "`data`: per-class metrics need scores of shape (S, C) and one class index per sample, shape (S,); "
            f"got predictions {tuple(prediction.shape)} and targets {tuple(target.shape)}"
        )


def _per_sample_output(loss: PerSampleLoss, argument: str) -> Check:
    def check(prediction: torch.Tensor, target: torch.Tensor) -> None:
        try:
            values = loss(prediction, target)
            shape, dtype = tuple(values.shape), values.dtype
        except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise FastsurfaceError(
                f"`{argument}` fails on the model's predictions {tuple(prediction.shape)} and the targets "
                f"{tuple(target.shape)} ({target.dtype}): {error}"
            ) from error
        if not dtype.is_floating_point:
            raise FastsurfaceError(
                f"`{argument}` must return real floating-point losses, got {dtype} (a complex or integer loss has "
                "no mean the engine can take without losing part of it)"
            )
        if shape != (len(prediction),):
            raise FastsurfaceError(
                f"`{argument}` must return one loss per sample, shape ({len(prediction)},), got shape {shape}"
            )

    return check
