"""Training paths of any model: full parameter vectors, projected onto a plane.

``record_path`` trains a copy of a model with any torch optimizer and keeps its whole
parameter vector at chosen steps; ``project_path`` finds each vector's nearest point on
a plane (least squares), reports how far off the plane it lies, and evaluates the loss
there with the surface engine, so the path can be drawn on the surface.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsurface._support.copying import private_copy
from fastsurface._support.devices import DeviceLike, DTypeLike, resolve_device, resolve_dtype
from fastsurface._support.memory import check_host_fits
from fastsurface._support.progress import Progress, step_total
from fastsurface.analysis._optimisers import OptimizerFactory, default_optimizer, step
from fastsurface.analysis.training import check_steps, training_batches
from fastsurface.engine import _stream as stream
from fastsurface.engine._losses import PerSampleLoss, resolve_loss
from fastsurface.engine._tiles import model_errors
from fastsurface.engine.evaluate import point_losses
from fastsurface.engine.options import DEFAULT_BATCH_SIZE, EvalOptions
from fastsurface.errors import FastsurfaceError, check_bool, check_positive_int, check_seed
from fastsurface.planes.plane import Plane, TensorDict, check_model, check_plane, unflatten
from fastsurface.results import Trajectory


@dataclass(frozen=True)
class ParameterPath:
    """A model's full parameter vectors at some optimiser steps.

    Attributes:
        names: parameter names, ``named_parameters()`` order.
        shapes: each parameter's shape.
        vectors: the parameters flattened and concatenated in ``names`` order, float64,
            shape ``(P, D)``.
        step: optimiser steps taken before each row, int64, shape ``(P,)``.
        model: the trained model (``record_path``'s private copy after its last step, on
            the training device and dtype, in the given model's train or eval mode);
            ``None`` for a path built from snapshots (``from_models``).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    vectors: np.ndarray
    step: np.ndarray
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], steps: Sequence[int] | None = None) -> ParameterPath:
        """A path from snapshots of one architecture (e.g. checkpoints of your own loop)."""
        if len(models) == 0:
            raise FastsurfaceError("`models` must hold at least one model, got none")
        named = [dict(m.named_parameters()) for m in models]
        layout = {n: tuple(p.shape) for n, p in named[0].items()}
        for index, parameters in enumerate(named):
            if {n: tuple(p.shape) for n, p in parameters.items()} != layout:
                raise FastsurfaceError(f"`models` must share one architecture; model {index} differs from model 0")
        vectors = np.stack([_flat(parameters.values()) for parameters in named])
        step = np.arange(len(models)) if steps is None else np.asarray(steps, dtype=np.int64)
        if step.shape != (len(models),):
            raise FastsurfaceError(f"`steps` must hold one step per model ({len(models)}), got {len(step)}")
        return cls(tuple(layout), tuple(layout.values()), vectors, step.astype(np.int64))

    def unflatten(self, vector: np.ndarray | torch.Tensor) -> TensorDict:
        """One row of ``vectors`` as float64 tensors by parameter name."""
        return unflatten(torch.as_tensor(np.asarray(vector), dtype=torch.float64), self.names, self.shapes)


def record_path(
    model: nn.Module,
    train: object,
    *,
    optimizer: OptimizerFactory | torch.optim.Optimizer | None = None,
    epochs: int = 1,
    record: str | Sequence[int] = "epoch",
    loss: str | PerSampleLoss = "mse",
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    device: DeviceLike = "cpu",
    dtype: DTypeLike = torch.float32,
    progress: bool = False,
) -> ParameterPath:
    """Train a copy of ``model`` (train mode) and record its parameters.

    The training loss is the batch mean of the per-sample ``loss``. The caller's model
    is not modified.

    Args:
        model: any module.
        train: an ``(x, y)`` pair, shuffled into batches of ``batch_size`` each epoch by a
            generator seeded with ``seed``, or an iterable of batches read once per epoch.
        optimizer: builds the optimizer from the copy's parameters, e.g.
            ``lambda p: torch.optim.Adam(p, lr=1e-3)``; plain SGD with ``lr=1e-2`` by default.
            An optimiser made for ``model``'s own parameters (``torch.optim.Adam(
            model.parameters(), lr=1e-3)``) is rebuilt for the copy: its class, its
            parameter groups' hyperparameters and its state (``state_dict``), so the path
            is the one its factory gives; it is never stepped itself.
        epochs: passes over ``train``.
        record: ``"epoch"`` (before training and after each epoch), ``"step"`` (before
            training and after every step) or the step numbers to keep (0 is the start);
            a step the training does not reach is refused (before training for a pair).
        seed: seeds the batch shuffling and, inside ``torch.random.fork_rng`` (the global
            state is restored afterwards), the random layers such as dropout.
        loss, device, dtype: as in ``loss_surface``.
        progress: show a progress bar of optimiser steps on stderr.

    Returns:
        The ``ParameterPath``; its ``model`` is the trained copy.

    >>> from fastsurface import ANN, piecewise_dataset
    >>> path = record_path(ANN(1, 2, 1), piecewise_dataset(256), epochs=3)
    >>> path.vectors.shape, path.step.tolist(), type(path.model).__name__
    ((4, 4), [0, 4, 8, 12], 'ANN')
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_seed("seed", seed)
    check_bool("progress", progress)
    check_model(model)
    stream.check_data("train", train)
    stream.check_reusable("train", train, epochs, "once per epoch")
    check_steps(train, epochs, batch_size)
    keep = recorder(record)
    if stream.is_pair(train):
        _check_reached(record, epochs * -(-len(train[0]) // batch_size))
    _check_rows(record_count(record, epochs, steps_per_epoch(train, batch_size)), model)
    objective = resolve_loss(loss)
    resolved, compute = resolve_device(device), resolve_dtype(dtype)
    module = private_copy(model).to(device=resolved, dtype=compute).train()
    parameters = dict(module.named_parameters())
    optimiser = _optimizer(optimizer, model, module)
    generator = torch.Generator().manual_seed(int(seed))
    rows, steps, taken = [_flat(parameters.values())], [0], 0
    # Random layers (dropout) draw from torch's generators, seeded here and restored after.
    bar = Progress("training", "step", progress, total=step_total(train, stream.is_pair(train), batch_size, epochs))
    with bar, torch.random.fork_rng(devices=[resolved] if resolved.type == "cuda" else []):
        torch.manual_seed(int(seed))
        for _ in range(epochs):
            for x, y in training_batches(train, batch_size, generator, resolved, compute):
                optimiser.zero_grad()
                with model_errors(x):
                    prediction = module(x)
                if taken == 0:
                    objective.check_shapes(prediction.detach(), y)
                objective.per_sample(prediction, y).mean().backward()
                step(optimiser)
                taken += 1
                bar.update()
                if keep(taken, epoch_end=False):
                    rows.append(_flat(parameters.values()))
                    steps.append(taken)
            if keep(taken, epoch_end=True) and steps[-1] != taken:
                rows.append(_flat(parameters.values()))
                steps.append(taken)
    if not keep(0, epoch_end=False):
        rows, steps = rows[1:], steps[1:]
    diverged = [step for step, row in zip(steps, rows, strict=True) if not np.isfinite(row).all()]
    if diverged:
        raise FastsurfaceError(
            f"`optimizer` diverged: the parameters are no longer finite at step {diverged[0]}; lower its learning rate"
        )
    _check_reached(record, taken)
    names = tuple(parameters)
    module.zero_grad(set_to_none=True)
    module.train(model.training)
    shapes = tuple(tuple(parameters[n].shape) for n in names)
    return ParameterPath(names, shapes, np.stack(rows), np.array(steps), model=module)


def _check_rows(rows: int, model: nn.Module) -> None:
    """Refuse a path of ``rows`` parameter vectors (float64) that would not fit in the host's memory."""
    needed = rows * 8 * sum(p.numel() for p in model.parameters())
    check_host_fits("record", f"{rows:,} parameter vectors need", needed, "record fewer steps")


def _check_reached(record: str | Sequence[int], last: int) -> None:
    """Refuse listed steps beyond ``last``, the training's final step."""
    if isinstance(record, str):
        return
    beyond = sorted({int(step) for step in record if int(step) > last})
    if beyond:
        raise FastsurfaceError(
            f"`record` lists steps this training does not reach: {beyond[:5]}; it takes steps 0 to {last} "
            "(epochs x batches per epoch)"
        )


@dataclass(frozen=True)
class ProjectedPath:
    """A parameter path's least-squares projection onto a plane.

    Attributes:
        w1, w2: plane coordinates of each point's projection, float64, shape ``(P,)``
            (also readable as ``a``, ``b``, their names before 0.1.0's glossary).
        residual: Euclidean distance from each parameter vector to its projection, over
            all parameters (those the plane does not move count against the model's
            values), float64, shape ``(P,)``.
        relative_residual: ``residual / ‖θ_i - θ_plane(0, 0)‖`` (0 where that is 0).
        loss: loss at each projected point by the surface engine, or ``None`` when no
            data was given, float64, shape ``(P,)``.
        step: optimiser steps, int64, shape ``(P,)``.
        labels: the plane's coordinate names.
        reduction: reduction of ``loss``.
    """

    w1: np.ndarray
    w2: np.ndarray
    residual: np.ndarray
    relative_residual: np.ndarray
    loss: np.ndarray | None
    step: np.ndarray
    labels: tuple[str, str]
    reduction: str

    @property
    def a(self) -> np.ndarray:
        """``w1``, under its earlier name."""
        return self.w1

    @property
    def b(self) -> np.ndarray:
        """``w2``, under its earlier name."""
        return self.w2

    def trajectory(self) -> Trajectory:
        """The projection as a ``Trajectory``, to draw with ``plot_surface``."""
        if self.loss is None:
            raise FastsurfaceError("`data` was not given to `project_path`, so the path has no losses to draw")
        return Trajectory(self.w1, self.w2, self.loss, self.step, self.labels, self.reduction, "path")


def project_path(
    model: nn.Module, plane: Plane, path: ParameterPath, data: object | None = None, **kwargs: Any
) -> ProjectedPath:
    """Project ``path`` onto ``plane`` through ``model`` and evaluate the loss there.

    The coordinates minimise ``‖θ_i - θ(w1, w2)‖`` over all parameters, where ``θ(w1, w2)``
    is ``model``'s parameters with the plane's moving ones replaced (least squares,
    float64).

    Args:
        model: the model the plane is evaluated with (its other parameters and buffers).
        plane: any plane over parameters of ``model``.
        path: recorded vectors of ``model``'s architecture.
        data: evaluation data, as in ``loss_surface``; no losses without it.
        **kwargs: evaluation options (``loss``, ``reduction``, ``batch_size``,
            ``device``, ``dtype``, ...) as in ``evaluate_points``; checked before any work.
    """
    options = EvalOptions.from_keywords(kwargs)
    check_model(model)
    if not isinstance(path, ParameterPath):
        raise FastsurfaceError(f"`path` must be a ParameterPath (from record_path), got {type(path).__name__}")
    basis = PlaneBasis.of(model, plane)
    if dict(zip(path.names, path.shapes, strict=True)) != basis.layout:
        raise FastsurfaceError("`path` must be recorded from `model`'s architecture (same parameter names and shapes)")
    coordinates, residual, distance = basis.project(torch.as_tensor(path.vectors, dtype=torch.float64))
    relative = torch.where(distance > 0, residual / torch.where(distance > 0, distance, 1), 0)
    loss = None
    if data is not None:
        loss = point_losses(model, plane, data, coordinates, options).loss.cpu().numpy()
    return ProjectedPath(
        w1=coordinates[:, 0].numpy(),
        w2=coordinates[:, 1].numpy(),
        residual=residual.numpy(),
        relative_residual=relative.numpy(),
        loss=loss,
        step=path.step,
        labels=plane.labels,
        reduction=options.reduction,
    )


def _optimizer(
    given: OptimizerFactory | torch.optim.Optimizer | None, model: nn.Module, module: nn.Module
) -> torch.optim.Optimizer:
    """The optimiser for ``module``, ``model``'s private copy: built by the factory ``given``
    (plain SGD, lr 1e-2, by default), or ``given`` rebuilt for it when it is an optimiser."""
    if given is None:
        return default_optimizer(module.parameters())
    if isinstance(given, torch.optim.Optimizer):
        return _rebound(given, model, module)
    if not callable(given):
        raise FastsurfaceError(
            f"`optimizer` must be a factory that builds an optimiser from parameters, e.g. "
            f"lambda p: torch.optim.Adam(p, lr=1e-3), or an optimiser of `model`'s parameters, "
            f"got {type(given).__name__}"
        )
    try:
        optimiser = given(module.parameters())
    except (TypeError, ValueError) as error:
        raise FastsurfaceError(f"`optimizer` fails to build an optimiser from the parameters: {error}") from error
    if not isinstance(optimiser, torch.optim.Optimizer):
        raise FastsurfaceError(f"`optimizer` must return a torch.optim.Optimizer, got {type(optimiser).__name__}")
    return optimiser


def _rebound(given: torch.optim.Optimizer, model: nn.Module, module: nn.Module) -> torch.optim.Optimizer:
    """An optimiser of ``given``'s class over ``module``'s parameters, with the parameter
    groups (same parameters by name, same hyperparameters) and state of ``given``, which
    holds ``model``'s parameters; ``given`` itself is neither stepped nor changed."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    copies = dict(module.named_parameters())
    groups = []
    for group in given.param_groups:
        foreign = [p for p in group["params"] if id(p) not in names]
        if foreign:
            raise FastsurfaceError(
                f"`optimizer` holds {len(foreign)} tensor(s) that are no parameters of `model`; pass an optimiser made "
                "for model.parameters(), or a factory such as lambda p: torch.optim.Adam(p, lr=1e-3)"
            )
        groups.append({**group, "params": [copies[names[id(p)]] for p in group["params"]]})
    try:
        rebuilt = type(given)(groups, **given.defaults)
        rebuilt.load_state_dict(copy.deepcopy(given.state_dict()))  # loading keeps given's state tensors
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise FastsurfaceError(
            f"`optimizer`: a {type(given).__name__} cannot be rebuilt for the private copy record_path trains "
            f"({error}); pass a factory instead, e.g. lambda p: {type(given).__name__}(p, ...)"
        ) from error
    return rebuilt


@dataclass(frozen=True)
class PlaneBasis:
    """A plane through a model as flat float64 vectors on the CPU, for least-squares
    projections of full parameter vectors onto it.

    Attributes:
        layout: the model's parameter shapes by name, ``named_parameters()`` order.
        origin: the model's parameters with the plane's origin in place of the moving
            ones, flattened in that order, shape ``(D,)``.
        span: the two directions flattened the same way (zeros for parameters they do
            not move), as columns, shape ``(D, 2)``.
    """

    layout: dict[str, tuple[int, ...]]
    origin: torch.Tensor
    span: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module, plane: Plane) -> PlaneBasis:
        """The basis of ``plane`` through ``model`` (checked to slice it)."""
        base = {n: p.detach().to("cpu", torch.float64) for n, p in model.named_parameters()}
        check_plane(model, plane)
        local = plane.to(torch.device("cpu"), torch.float64)
        origin = dict(base, **local.origin)
        span = torch.stack([_flat_tensor(local.first, origin), _flat_tensor(local.second, origin)], dim=1)
        return cls({n: tuple(t.shape) for n, t in base.items()}, _flat_tensor(origin, origin), span)

    def project(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Least-squares plane coordinates of parameter vectors ``(P, D)`` (float64, CPU).

        Returns:
            ``(coordinates, residual, distance)``: coordinates ``(P, 2)`` minimising
            ``‖θ_i - θ(w1, w2)‖``, that minimum ``(P,)``, and ``‖θ_i - θ(0, 0)‖`` ``(P,)``.
        """
        offsets = vectors - self.origin
        coordinates = torch.linalg.lstsq(self.span, offsets.T, driver="gelsd").solution.T
        return coordinates, (offsets - coordinates @ self.span.T).norm(dim=1), offsets.norm(dim=1)


def steps_per_epoch(train: object, batch_size: int) -> int | None:
    """Optimiser steps an epoch over ``train`` takes; None for a loader without a length."""
    if stream.is_pair(train):
        return math.ceil(len(train[0]) / batch_size)
    return len(train) if hasattr(train, "__len__") else None


def record_count(record: str | Sequence[int], epochs: int, per_epoch: int | None) -> int:
    """Records a run keeps (``recorder``'s rule; one step an epoch where a loader has no length)."""
    if record == "epoch":
        return epochs + 1
    if record == "step":
        return epochs * (per_epoch or 1) + 1
    return len(set(map(int, record)))  # recorder checked it


def recorder(record: str | Sequence[int]) -> Callable[..., bool]:
    """``record`` (``"epoch"``, ``"step"`` or step numbers, as ``record_path`` takes it) as
    a test ``keep(step, epoch_end)``: whether to record after ``step`` steps, at the end
    of an epoch or not."""
    if isinstance(record, str) and record == "epoch":
        return lambda step, epoch_end: epoch_end or step == 0
    if isinstance(record, str) and record == "step":
        return lambda step, epoch_end: True
    if isinstance(record, np.ndarray) and record.ndim == 1:
        record = record.tolist()
    if (
        isinstance(record, str)
        or not isinstance(record, (list, tuple, range))
        or not record
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in record)
    ):
        raise FastsurfaceError(
            f"`record` must be 'epoch', 'step' or a non-empty sequence of step numbers >= 0, got {record!r}"
        )
    wanted = {int(s) for s in record}
    return lambda step, epoch_end: step in wanted and not epoch_end


def _flat(parameters: Iterable[torch.Tensor]) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1).to("cpu", torch.float64) for p in parameters]).numpy()


def _flat_tensor(tensors: TensorDict, order: TensorDict) -> torch.Tensor:
    """``tensors`` flattened in ``order``'s key order, zeros where a key is missing."""
    return torch.cat([tensors.get(n, torch.zeros_like(t)).reshape(-1) for n, t in order.items()])
