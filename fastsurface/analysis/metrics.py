"""Metrics beside the loss, all from one pass over the data.

A metric is anything ``loss`` accepts (a name, a torch loss module, a per-sample callable
``(prediction, target) -> (S,)``: ``engine._losses``), so every engine path, reduction
and device applies to it. Several metrics are evaluated together (``_losses.combine``):
each tile of points runs the model once on each chunk of data, and every metric's
weighted sum comes from those same predictions, computed as it would be alone. A
metric's surface therefore equals a separate pass's on the same route, bit for bit on
the ``vmap`` route; the ``compiled`` route fuses the metrics into one kernel, whose
sums agree to the rounding of the compute dtype. The closed form applies to a lone
``"mse"`` only: several metrics take a brute-force route.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsurface.engine._losses import STRINGS, Loss, PerSampleLoss, by_class, combine, resolve_loss
from fastsurface.engine._losses import accuracy as accuracy
from fastsurface.engine.evaluate import grid_surface
from fastsurface.engine.options import surface_keywords
from fastsurface.errors import FastsurfaceError
from fastsurface.results import Surface, TrainTest

Grid = Sequence[float] | np.ndarray | torch.Tensor | None
Metrics = Mapping[str, str | PerSampleLoss | nn.Module]
# What per_class_surfaces evaluates unless told otherwise.
CLASSIFICATION = {"loss": "cross_entropy", "accuracy": "accuracy"}


def metric_surfaces(
    model: nn.Module,
    data: object,
    w1: Grid = None,
    w2: Grid = None,
    *,
    metrics: Metrics,
    higher_is_better: Collection[str] = (),
    **options: Any,
) -> dict[str, Surface]:
    """One surface per named metric on the same grid, plane and data, from one pass.

    Args:
        model, data, w1, w2: as in ``loss_surface``; ``data`` is read once, so a one-shot
            iterator will do.
        metrics: names to per-sample functions: the strings ``"mse"``, ``"cross_entropy"``,
            ``"nll"``, ``"accuracy"`` (``fs.accuracy``), a torch loss module such as
            ``nn.CrossEntropyLoss()``, or any callable ``(prediction, target) -> (S,)``.
            Each surface's ``metric`` is its name here.
        higher_is_better: names (keys of ``metrics``) of callables for which higher is
            better; accuracy knows it already.
        options: ``plane`` and the evaluation options of ``loss_surface`` (not ``loss``),
            all checked before any work.

    Returns:
        ``{name: Surface}`` in the order of ``metrics``; each records the one pass's
        samples, method and seconds.

    >>> import fastsurface as fs
    >>> surfaces = metric_surfaces(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), [0.0, 1.0], [1.0],
    ...                            metrics={"mse": "mse", "mae": lambda p, t: (p - t).abs()[:, 0]})
    >>> list(surfaces), surfaces["mae"].loss.shape, surfaces["mae"].metric
    (['mse', 'mae'], (2, 1), 'mae')
    """
    parts = _resolved(metrics, higher_is_better, options)
    plane, chosen = surface_keywords({**options, "loss": parts[0] if len(parts) == 1 else combine(parts)})
    together = grid_surface(model, data, w1, w2, plane, chosen)
    if len(parts) == 1:
        return {name: together for name in metrics}
    return {
        name: _column(together, part, together.loss_tensor[..., m])
        for m, (name, part) in enumerate(zip(metrics, parts, strict=True))
    }


def per_class_surfaces(
    model: nn.Module,
    data: object,
    w1: Grid = None,
    w2: Grid = None,
    *,
    metrics: Metrics = CLASSIFICATION,
    higher_is_better: Collection[str] = (),
    **options: Any,
) -> dict[str, list[Surface]]:
    """Each metric's mean over the samples of each class, on the same grid, from one pass.

    For classifiers: scores of shape ``(S, C)`` and one integer class per sample,
    ``(S,)``, in ``[0, C)``. Class ``c``'s surface holds at each point the mean of the
    metric over the samples whose target is ``c``: the sum over them divided by their
    count, both taken in the same pass (exact, to float64 rounding), and records that
    count as its ``samples``. A class of the model's ``C`` that the data lack gives a
    surface of NaN with ``samples == 0``.

    Args:
        model, data, w1, w2: as in ``loss_surface``; ``data`` is read once.
        metrics: as in ``metric_surfaces``; cross-entropy and accuracy by default.
        higher_is_better: as in ``metric_surfaces``.
        options: ``plane`` and the evaluation options of ``loss_surface`` (not ``loss``;
            ``reduction`` only ``"mean"``: a class's mean is over its samples).

    Returns:
        ``{name: [surface of class 0, ..., class C - 1]}`` in the order of ``metrics``;
        each surface's ``metric`` is ``"<name> (class <c>)"``.

    >>> import numpy as np, fastsurface as fs
    >>> from torch import nn
    >>> model = nn.Linear(2, 3)
    >>> x, y = np.random.default_rng(0).normal(size=(30, 2)), np.arange(30) % 3
    >>> plane = fs.random_plane(model, seed=0)
    >>> classes = per_class_surfaces(model, (x, y), [0.0, 1.0], [0.0], plane=plane)
    >>> [s.samples for s in classes["accuracy"]], classes["loss"][2].metric
    ([10, 10, 10], 'loss (class 2)')
    """
    parts = _resolved(metrics, higher_is_better, options)
    if options.get("reduction", "mean") != "mean":
        raise FastsurfaceError(
            f"`reduction` must be 'mean' for per-class metrics (a class's mean is over its samples), "
            f"got {options['reduction']!r}"
        )
    objective = combine([*(by_class(part) for part in parts), by_class(None)])
    plane, chosen = surface_keywords({**options, "loss": objective})
    together = grid_surface(model, data, w1, w2, plane, chosen)
    n1, n2, width = together.loss_tensor.shape
    columns = together.loss_tensor.reshape(n1, n2, len(parts) + 1, width // (len(parts) + 1))
    shares = columns[:, :, -1]  # each class's fraction of the samples, the same at every point
    counts = [round(float(share) * together.samples) for share in shares[0, 0]]
    return {
        name: [
            dataclasses.replace(
                _column(together, part, columns[:, :, m, c] / shares[:, :, c]),
                metric=f"{name} (class {c})",
                samples=count,
            )
            for c, count in enumerate(counts)
        ]
        for m, (name, part) in enumerate(zip(metrics, parts, strict=True))
    }


def train_test_surfaces(
    model: nn.Module,
    train: object,
    test: object,
    w1: Grid = None,
    w2: Grid = None,
    *,
    metrics: Metrics | None = None,
    higher_is_better: Collection[str] = (),
    **options: Any,
) -> dict[str, TrainTest]:
    """Each metric on the training and on the test data, on the same grid and plane, and
    the generalisation gap between them: one pass over each data set.

    Args:
        model, w1, w2: as in ``loss_surface``.
        train, test: the training and the test data, as ``loss_surface``'s ``data``.
        metrics: as in ``metric_surfaces``; ``{"loss": "mse"}`` (``loss_surface``'s
            default loss) when ``None``.
        higher_is_better, options: as in ``metric_surfaces``.

    Returns:
        ``{name: TrainTest}`` in the order of ``metrics``; ``TrainTest.gap`` is positive
        where the model does worse on the test data.

    >>> import fastsurface as fs
    >>> train, test = fs.train_test_split(*fs.piecewise_dataset(200), seed=0)
    >>> both = train_test_surfaces(fs.ANN(1, 1, 1), train, test, [0.5, 1.0], [1.0, 2.0])
    >>> gap = both["loss"]
    >>> bool((gap.gap.loss == gap.test.loss - gap.train.loss).all()), gap.gap.metric
    (True, 'loss gap')
    """
    chosen = {"loss": "mse"} if metrics is None else metrics
    parts = _resolved(chosen, higher_is_better, options)  # every check before the first pass
    first = metric_surfaces(model, train, w1, w2, metrics=chosen, higher_is_better=higher_is_better, **options)
    second = metric_surfaces(model, test, w1, w2, metrics=chosen, higher_is_better=higher_is_better, **options)
    return {name: _train_test(first[name], second[name], part) for name, part in zip(chosen, parts, strict=True)}


def _train_test(train: Surface, test: Surface, part: Loss) -> TrainTest:
    worse = train.loss_tensor - test.loss_tensor if part.higher_is_better else test.loss_tensor - train.loss_tensor
    gap = dataclasses.replace(
        test,
        loss_tensor=worse,
        metric=f"{part.metric} gap",
        higher_is_better=False,
        seconds=train.seconds + test.seconds,
    )
    return TrainTest(train=train, test=test, gap=gap)


def _resolved(metrics: object, higher_is_better: Collection[str], options: Mapping[str, object]) -> list[Loss]:
    """Each metric's ``Loss``, named by its key, refusing bad names and values up front."""
    if not isinstance(metrics, Mapping) or not metrics:
        raise FastsurfaceError(
            f"`metrics` must be a non-empty mapping of names to per-sample functions, got {metrics!r:.200}"
        )
    if "loss" in options:
        raise FastsurfaceError("`metrics` names every per-sample function; pass none as `loss`")
    names = list(metrics)
    if not all(isinstance(name, str) and name for name in names):
        raise FastsurfaceError(f"`metrics` must be keyed by non-empty strings, got keys {names!r:.200}")
    if (
        isinstance(higher_is_better, str)
        or not isinstance(higher_is_better, Collection)
        or not all(isinstance(name, str) for name in higher_is_better)
    ):
        raise FastsurfaceError(
            f"`higher_is_better` must be a collection of metric names (strings), got {higher_is_better!r:.200}"
        )
    unknown = sorted(set(higher_is_better) - set(names))
    if unknown:
        raise FastsurfaceError(f"`higher_is_better` must name metrics of `metrics` ({names}), got unknown {unknown}")
    parts = [resolve_loss(metric, f"metrics[{name!r}]") for name, metric in metrics.items()]
    return [
        dataclasses.replace(part, metric=name, higher_is_better=part.higher_is_better or name in higher_is_better)
        for name, part in zip(names, parts, strict=True)
    ]


def _column(together: Surface, part: Loss, values: torch.Tensor) -> Surface:
    """One metric's surface out of a combined pass's."""
    return dataclasses.replace(
        together,
        loss_tensor=values.contiguous(),
        loss_name=part.name,
        loss_function=None if part.name in STRINGS else part,
        metric=part.metric,
        higher_is_better=part.higher_is_better,
    )
