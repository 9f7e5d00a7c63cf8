"""The landscape functions of ``loss_landscapes`` 3.0.6, vectorised over points.

Each function builds the package's directions and point coordinates (see the package
docstring for every convention), then evaluates the metric at all points of a
``Plane`` at once: ``torch.func.functional_call`` under ``torch.func.vmap`` over tiles of
points, on a private copy of the model.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from fastsurface.compat.loss_landscapes.metrics import Loss, Metric, MetricPipeline
from fastsurface.compat.loss_landscapes.model_wrapper import ModelWrapper, wrap_model
from fastsurface.engine import DEFAULT_BUDGET
from fastsurface.errors import FastsurfaceError, check_positive_int
from fastsurface.plane import Plane
from fastsurface.tiles import bytes_per_sample

NORMALIZATIONS = ("filter", "layer", "model", None)
Model = nn.Module | ModelWrapper


def point(model: Model, metric: Metric) -> Any:
    """The metric at the model's parameters."""
    return metric(copy.deepcopy(wrap_model(model)))


def linear_interpolation(
    model_start: Model, model_end: Model, metric: Metric, steps: int = 100, deepcopy_model: bool = False
) -> np.ndarray:
    """The metric at ``θ_start + k/steps · (θ_end - θ_start)`` for ``k = 1 … steps``; shape ``(steps,)``."""
    check_positive_int("steps", steps)
    landscape = _Landscape(model_start)
    start = landscape.start
    direction = [(e - s) / steps for s, e in zip(start, _Landscape(model_end).start_like(start), strict=True)]
    return landscape.values(metric, landscape.plane(direction, None), _line(steps))


def random_line(
    model_start: Model,
    metric: Metric,
    distance: float = 0.1,
    steps: int = 100,
    normalization: str | None = "filter",
    deepcopy_model: bool = False,
) -> np.ndarray:
    """The metric at ``k = 1 … steps`` steps along one uniform random direction; shape ``(steps,)``.

    The direction is drawn from torch's global generator, normalised, and scaled to a
    length of ``‖θ₀‖ / distance / steps`` per step.
    """
    _check_landscape(steps, distance, normalization)
    landscape = _Landscape(model_start)
    direction = _scaled(
        _normalized(_uniform_like(landscape), landscape.start, normalization), landscape, distance, steps
    )
    return landscape.values(metric, landscape.plane(direction, None), _line(steps))


def planar_interpolation(
    model_start: Model,
    model_end_one: Model,
    model_end_two: Model,
    metric: Metric,
    steps: int = 20,
    deepcopy_model: bool = False,
) -> np.ndarray:
    """The metric on the plane through three models; shape ``(steps, steps)``.

    ``result[i, j]`` is at ``θ₀ + i·d₁ + (j + [i even])·d₂`` with ``d_k = (θ_k - θ₀) / steps``.
    """
    check_positive_int("steps", steps)
    landscape = _Landscape(model_start)
    start = landscape.start
    one, two = (_Landscape(m).start_like(start) for m in (model_end_one, model_end_two))
    first = [(e - s) / steps for s, e in zip(start, one, strict=True)]
    second = [(e - s) / steps for s, e in zip(start, two, strict=True)]
    points, positions = _grid(steps, 0.0)
    return _on_grid(landscape.values(metric, landscape.plane(first, second), points), positions, steps)


def random_plane(
    model: Model,
    metric: Metric,
    distance: float = 1,
    steps: int = 20,
    normalization: str | None = "filter",
    deepcopy_model: bool = False,
) -> np.ndarray:
    """The metric on a plane of two uniform random directions, centred on the model; ``(steps, steps)``.

    ``result[i, j]`` is at ``θ₀ + (i - steps/2)·d₁ + (j + [i even] - steps/2)·d₂``, each
    direction of length ``‖θ₀‖ / distance / steps``.
    """
    _check_landscape(steps, distance, normalization)
    landscape = _Landscape(model)
    start = landscape.start
    first = _uniform_like(landscape)
    second = _orthogonal_to(first, landscape)
    first, second = (_scaled(_normalized(d, start, normalization), landscape, distance, steps) for d in (first, second))
    points, positions = _grid(steps, steps / 2)
    return _on_grid(landscape.values(metric, landscape.plane(first, second), points), positions, steps)


class _Landscape:
    """A private copy of a (wrapped) model as one module whose parameters are named."""

    def __init__(self, model: Model) -> None:
        self.module = _WrapperModule(copy.deepcopy(wrap_model(model)))
        self.parameters = dict(self.module.named_parameters())
        for parameter in self.parameters.values():
            parameter.requires_grad_(False)  # as the package's wrap_model, but on the copy only
        if not self.parameters:
            raise FastsurfaceError("`model` must have at least one parameter, got none")
        self.start = [p.detach().to("cpu", torch.float64) for p in self.parameters.values()]
        self.dtype = next(iter(self.parameters.values())).dtype
        self.device = next(iter(self.parameters.values())).device

    def start_like(self, reference: list[torch.Tensor]) -> list[torch.Tensor]:
        if [t.shape for t in self.start] != [t.shape for t in reference]:
            raise FastsurfaceError("the models of a landscape must share one architecture (parameter shapes differ)")
        return self.start

    def plane(self, first: list[torch.Tensor], second: list[torch.Tensor] | None) -> Plane:
        """The plane through the start point; a missing direction is zero."""
        names = list(self.parameters)
        zero = [torch.zeros_like(t) for t in self.start]
        first, second = first or zero, second or zero
        origin, along_a, along_b = (dict(zip(names, part, strict=True)) for part in (self.start, first, second))
        plane = Plane(origin, along_a, along_b)
        return plane.to(self.device, self.dtype)

    def values(self, metric: Metric, plane: Plane, points: np.ndarray) -> np.ndarray:
        """The metric at each of ``points`` ``(P, 2)``: shape ``(P,)``, or ``(P, k)`` for pipelines."""
        if isinstance(metric, MetricPipeline):
            return np.stack([self.values(m, plane, points) for m in metric.metrics], axis=-1)
        coordinates = torch.as_tensor(points, dtype=self.dtype, device=self.device)
        if isinstance(metric, Loss):
            try:
                # vmap refuses random operations, so a successful pass drew nothing; a failed
                # one (or the memory probe's forward pass) must leave the generators as they were.
                with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                    return self._vectorised_loss(metric, plane, coordinates)
            except RuntimeError:
                pass  # not vmap-able (in-place buffer updates, dropout in train mode): the package's per-point loop
        return self._loop(metric, plane, coordinates)

    def _vectorised_loss(self, metric: Loss, plane: Plane, coordinates: torch.Tensor) -> np.ndarray:
        def loss_at(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            prediction = functional_call(self.module, plane.params(a, b), (metric.inputs,))
            return metric.loss_fn(prediction, metric.target)

        kernel = vmap(loss_at)
        tile = self._tile_points(metric.inputs)
        with torch.no_grad():
            losses = torch.cat(
                [kernel(*coordinates[start : start + tile].T) for start in range(0, len(coordinates), tile)]
            )
        if losses.shape != (len(coordinates),):
            raise FastsurfaceError(
                f"`metric.loss_fn` must return one number per call, got shape {tuple(losses.shape[1:])}"
            )
        return losses.cpu().numpy().astype(np.float64)

    def _tile_points(self, inputs: torch.Tensor) -> int:
        per_point = bytes_per_sample(self.module, inputs[:4]) * len(inputs)
        return max(1, DEFAULT_BUDGET[self.device.type] // per_point)

    def _loop(self, metric: Metric, plane: Plane, coordinates: torch.Tensor) -> np.ndarray:
        results = []
        for a, b in coordinates:
            with torch.no_grad():
                for name, value in plane.params(a, b).items():
                    self.parameters[name].copy_(value)
            results.append(metric(self.module.wrapper))
        return np.array(results)


class _WrapperModule(nn.Module):
    """A wrapper's modules as submodules ``parts.i``; ``forward`` is the wrapper's."""

    def __init__(self, wrapper: ModelWrapper) -> None:
        super().__init__()
        self.parts = nn.ModuleList(wrapper.modules)
        self.wrapper = wrapper

    def forward(self, x: torch.Tensor) -> Any:
        return self.wrapper.forward(x)


def _check_landscape(steps: int, distance: float, normalization: str | None) -> None:
    check_positive_int("steps", steps)
    if not isinstance(distance, (int, float)) or not math.isfinite(distance) or distance == 0:
        raise FastsurfaceError(f"`distance` must be a finite non-zero number, got {distance!r}")
    if normalization not in NORMALIZATIONS:
        raise FastsurfaceError(
            f"`normalization` must be one of {', '.join(map(repr, NORMALIZATIONS))}, got {normalization!r}"
        )


def _line(steps: int) -> np.ndarray:
    """Points ``(k, 0)`` for ``k = 1 … steps``: the package steps before it evaluates."""
    return np.stack([np.arange(1, steps + 1), np.zeros(steps)], axis=1)


def _grid(steps: int, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """The package's walk over a ``steps × steps`` plane: points in visiting order and their
    row-major positions.

    Even rows are walked forwards, adding ``d₂`` before each evaluation, odd rows backwards,
    evaluating before stepping back: row ``i``, column ``j`` is at
    ``(i - centre, j + [i even] - centre)``. The order matters only to metrics that draw
    random numbers (dropout in training mode), which then draw them as the package does.
    """
    visits = [(i, j) for i in range(steps) for j in (range(steps) if i % 2 == 0 else reversed(range(steps)))]
    rows, columns = np.array(visits).T
    points = np.stack([rows - centre, columns + (rows % 2 == 0) - centre], axis=1).astype(np.float64)
    return points, rows * steps + columns


def _on_grid(values: np.ndarray, positions: np.ndarray, steps: int) -> np.ndarray:
    """Values in visiting order placed at their row-major positions, shape ``(steps, steps, ...)``."""
    grid = np.empty_like(values)
    grid[positions] = values
    return grid.reshape(steps, steps, *values.shape[1:])


def _uniform_like(landscape: _Landscape) -> list[torch.Tensor]:
    """Uniform [0, 1) entries from torch's global generator, as the package draws them:
    one ``torch.rand`` per parameter, in order, in the first parameter's dtype, on the CPU."""
    return [torch.rand(size=t.size(), dtype=landscape.dtype).to(torch.float64) for t in landscape.start]


def _orthogonal_to(vector: list[torch.Tensor], landscape: _Landscape) -> list[torch.Tensor]:
    """A fresh uniform draw minus its projection on ``vector`` (the package's ``orthogonal_to``)."""
    drawn = _uniform_like(landscape)
    dot = sum(float((d * v).sum()) for d, v in zip(drawn, vector, strict=True))
    squared = sum(float(v.square().sum()) for v in vector)
    return [d - dot * v / squared for d, v in zip(drawn, vector, strict=True)]


def _normalized(
    direction: list[torch.Tensor], start: list[torch.Tensor], normalization: str | None
) -> list[torch.Tensor]:
    if normalization == "filter":
        return [_filter_normalized(d, s) for d, s in zip(direction, start, strict=True)]
    if normalization == "layer":
        return [d * _ratio(s.norm(), d.norm()) for d, s in zip(direction, start, strict=True)]
    if normalization == "model":
        return _model_normalized(direction, start)
    return direction


def _filter_normalized(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each slice along dim 0 scaled to the weight's slice norm; for a vector (or a scalar)
    each entry becomes ``|d_f| · |θ_f| / |d_f|``, i.e. ``|θ_f|`` for the package's positive draws."""
    dims = tuple(range(1, direction.ndim))
    target = torch.linalg.vector_norm(weight, dim=dims, keepdim=True) if dims else weight.abs()
    current = torch.linalg.vector_norm(direction, dim=dims, keepdim=True) if dims else direction.abs()
    return direction * _ratio(target, current)


def _model_normalized(direction: list[torch.Tensor], start: list[torch.Tensor]) -> list[torch.Tensor]:
    """The package rescales parameter by parameter, re-measuring the direction's norm after
    each one, so later parameters get different factors; reproduced as written."""
    target = _model_norm(start)
    scaled = list(direction)
    for index in range(len(scaled)):
        scaled[index] = scaled[index] * _ratio(target, _model_norm(scaled))
    return scaled


def _scaled(direction: list[torch.Tensor], landscape: _Landscape, distance: float, steps: int) -> list[torch.Tensor]:
    """Length ``‖θ₀‖ / distance / steps`` over all parameters (the package's step size)."""
    factor = _model_norm(landscape.start) / distance / steps / _model_norm(direction)
    return [d * factor for d in direction]


def _model_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    # ``s₁ + s₂ + ...`` in order, as ``sum`` adds them (its leading ``0 +`` changes no bit of a sum of squares).
    return torch.sqrt(functools.reduce(torch.add, (t.square().sum() for t in tensors)))


def _ratio(target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``target / current``, 0 where ``current`` is 0 (the package divides by zero there)."""
    return torch.where(current > 0, target / torch.where(current > 0, current, 1), 0)
