"""The landscape functions of ``loss_landscapes`` 3.0.6, vectorised over points.

Each function builds the package's directions and point coordinates (see the package
docstring for every convention), then evaluates the metric at all points of a
``Plane`` at once: ``torch.func.functional_call`` under ``torch.func.vmap`` over tiles of
points, on a private copy of the model.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from fastsurface.compat.loss_landscapes.metrics import Loss, Metric, MetricPipeline
from fastsurface.compat.loss_landscapes.model_wrapper import (
    ModelWrapper,
    SimpleModelWrapper,
    private_wrapper,
    rand_u_like,
)
from fastsurface.engine._shared import TileBuffers, shared_forward
from fastsurface.engine._tiles import check_fits, whole_batch_tile_points
from fastsurface.engine.options import DEFAULT_BUDGET
from fastsurface.errors import FastsurfaceError, check_choice
from fastsurface.planes.plane import Plane

NORMALIZATIONS = ("filter", "layer", "model", None)
# Host bytes per landscape point: its coordinates, visiting position, value and place in the grid.
_BYTES_PER_POINT = 64
Model = nn.Module | ModelWrapper


def point(model: Model, metric: Metric) -> Any:
    """The metric at the model's parameters."""
    return metric(private_wrapper(model))


def linear_interpolation(
    model_start: Model, model_end: Model, metric: Metric, steps: int = 100, deepcopy_model: bool = False
) -> np.ndarray:
    """The metric at ``θ_start + k/steps · (θ_end - θ_start)`` for ``k = 1 … steps``; shape ``(steps,)``
    (empty for ``steps=0``, as in the package)."""
    steps = _steps(steps, minimum=0)
    landscape = _Landscape(model_start)
    start = landscape.start
    end = _Landscape(model_end).start_like(start)
    if steps == 0:
        return np.array([])
    direction = [(e - s) / steps for s, e in zip(start, end, strict=True)]
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
    steps, distance = _check_landscape(steps, distance, normalization)
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

    ``result[i, j]`` is at ``θ₀ + i·d₁ + (j + [i even])·d₂`` with ``d_k = (θ_k - θ₀) / steps``
    (empty for ``steps=0``, as in the package).
    """
    steps = _steps(steps, minimum=0)
    landscape = _Landscape(model_start)
    start = landscape.start
    one, two = (_Landscape(m).start_like(start) for m in (model_end_one, model_end_two))
    if steps == 0:
        return np.array([])
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
    steps, distance = _check_landscape(steps, distance, normalization)
    landscape = _Landscape(model)
    start = landscape.start
    first = _uniform_like(landscape)
    second = _orthogonal_to(first, landscape)
    first, second = (_scaled(_normalized(d, start, normalization), landscape, distance, steps) for d in (first, second))
    points, positions = _grid(steps, steps / 2)
    return _on_grid(landscape.values(metric, landscape.plane(first, second), points), positions, steps)


class _Landscape:
    """A private copy of a (wrapped) model as one module whose parameters are named.

    ``start`` holds the package's parameter list, float64, on the CPU: ``p for module in
    modules for p in module.parameters()``, so a parameter shared by two of a wrapper's
    modules appears twice, and the package moves it by the sum of both entries' steps.
    """

    def __init__(self, model: Model) -> None:
        self.module = _WrapperModule(private_wrapper(model))
        self.parameters = dict(self.module.named_parameters())
        if not self.parameters:
            raise FastsurfaceError("`model` must have at least one parameter, got none")
        name_of = {id(p): name for name, p in self.parameters.items()}
        self.entries = [name_of[id(p)] for p in self.module.wrapper.get_module_parameters()]
        self.start = [self.parameters[name].detach().to("cpu", torch.float64, copy=True) for name in self.entries]
        self.dtype = self.parameters[self.entries[0]].dtype
        self.device = self.parameters[self.entries[0]].device

    def start_like(self, reference: list[torch.Tensor]) -> list[torch.Tensor]:
        if [t.shape for t in self.start] != [t.shape for t in reference]:
            raise FastsurfaceError("the models of a landscape must share one architecture (parameter shapes differ)")
        return self.start

    def plane(self, first: list[torch.Tensor], second: list[torch.Tensor] | None) -> Plane:
        """The plane through the start point, one tensor per entry of ``start``; a missing
        direction is zero."""
        zero = [torch.zeros_like(t) for t in self.start]
        origin = dict(zip(self.entries, self.start, strict=True))
        plane = Plane(origin, self._summed(first or zero), self._summed(second or zero))
        return plane.to(self.device, self.dtype)

    def _summed(self, direction: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per parameter, the sum of its entries' steps (one entry unless shared)."""
        summed: dict[str, torch.Tensor] = {}
        for name, step in zip(self.entries, direction, strict=True):
            summed[name] = summed[name] + step if name in summed else step
        return summed

    def values(self, metric: Metric, plane: Plane, points: np.ndarray) -> np.ndarray:
        """The metric at each of ``points`` ``(P, 2)``: shape ``(P,)``, or ``(P, ...)`` for
        metrics with array values and pipelines, as ``np.array`` stacks the package's values."""
        coordinates = torch.as_tensor(points, dtype=self.dtype, device=self.device)
        if _vectorisable(metric):
            values = self._vectorised(metric, plane, coordinates)
            if values is not None:
                return values
        return self._loop(metric, plane, coordinates)

    def _vectorised(self, metric: Metric, plane: Plane, coordinates: torch.Tensor) -> np.ndarray | None:
        """All points at once; ``None`` where the model or loss cannot run so (in-place buffer
        updates, dropout in training mode, a loss that is not one number), and then the
        package's per-point loop decides, errors included. The attempt draws no random
        numbers and leaves the copy's buffers as they were."""
        losses = cast(list[Loss], metric.metrics if isinstance(metric, MetricPipeline) else [metric])
        buffers = [b.clone() for b in self.module.buffers()]
        columns = []
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for loss in losses:
                    column = self._vectorised_loss(loss, plane, coordinates)
                    if column is None:
                        return None
                    columns.append(column)
        except Exception:  # any failure: the per-point loop reproduces the package, errors included
            return None
        finally:
            with torch.no_grad():
                for buffer, saved in zip(self.module.buffers(), buffers, strict=True):
                    buffer.copy_(saved)
        return np.stack(columns, axis=-1) if isinstance(metric, MetricPipeline) else columns[0]

    def _vectorised_loss(self, metric: Loss, plane: Plane, coordinates: torch.Tensor) -> np.ndarray | None:
        tile = whole_batch_tile_points(self.module, metric.inputs, self.device)
        with torch.no_grad():
            tile_losses = self._tile_losses(metric, plane)
            losses = torch.cat(
                [tile_losses(*coordinates[start : start + tile].T) for start in range(0, len(coordinates), tile)]
            )
        values = losses.reshape(len(coordinates), -1)
        if values.shape[1] != 1:
            return None
        return np.array(values[:, 0].tolist())  # Python numbers, as ``.item()`` gives them

    def _tile_losses(self, metric: Loss, plane: Plane) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(a, b) -> losses`` at a tile of points: for one plain module with tensor inputs
        through the engine's shared forward where it applies (what the points share made
        here, once), else a ``functional_call`` per point; both under ``vmap``."""
        forward = None
        if type(self.module.wrapper) is SimpleModelWrapper and isinstance(metric.inputs, torch.Tensor):
            origin, first, second = ({n.removeprefix("parts.0."): t for n, t in part.items()} for part in _parts(plane))
            forward = shared_forward(self.module.parts[0], Plane(origin, first, second))
        if forward is None:

            def loss_at(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                prediction = functional_call(self.module, plane.params(a, b), (metric.inputs,))
                return metric.loss_fn(prediction, metric.target)

            return vmap(loss_at)
        shared, buffers = forward.share(metric.inputs), TileBuffers()
        losses = vmap(metric.loss_fn, in_dims=(0, None))
        return lambda a, b: losses(forward.predictions(a, b, shared, buffers), metric.target)

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

    def forward(self, x: Any) -> Any:
        return self.wrapper.forward(x)


def _parts(plane: Plane) -> tuple[dict[str, torch.Tensor], ...]:
    return plane.origin, plane.first, plane.second


def _vectorisable(metric: Metric) -> bool:
    """A ``Loss`` as the package defines it, or a pipeline of them (a subclass that
    overrides ``__call__`` computes something else, so it runs point by point)."""
    if isinstance(metric, MetricPipeline):
        return type(metric).__call__ is MetricPipeline.__call__ and all(map(_vectorisable, metric.metrics))
    return isinstance(metric, Loss) and type(metric).__call__ is Loss.__call__


def _steps(steps: object, minimum: int) -> int:
    """``steps`` as an int (any integer type, a 0-d integer tensor), at least ``minimum``."""
    try:
        value = operator.index(steps)  # type: ignore[arg-type]
    except TypeError:
        value = None
    if value is None or isinstance(steps, bool) or value < minimum:
        raise FastsurfaceError(f"`steps` must be an integer >= {minimum}, got {steps!r}")
    return value


def _check_landscape(steps: object, distance: object, normalization: str | None) -> tuple[int, float]:
    """``steps`` and ``distance`` as numbers, or a ``FastsurfaceError``."""
    is_number = isinstance(distance, numbers.Real) or (isinstance(distance, torch.Tensor) and distance.numel() == 1)
    value = float(distance) if is_number and not isinstance(distance, bool) else math.nan  # type: ignore[arg-type]
    if math.isnan(value) or value == 0:
        raise FastsurfaceError(f"`distance` must be a non-zero number, got {distance!r}")
    check_choice("normalization", normalization, NORMALIZATIONS)
    return _steps(steps, minimum=1), value


def _line(steps: int) -> np.ndarray:
    """Points ``(k, 0)`` for ``k = 1 … steps``: the package steps before it evaluates."""
    _check_fits(1, steps)
    return np.stack([np.arange(1, steps + 1), np.zeros(steps)], axis=1)


def _grid(steps: int, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """The package's walk over a ``steps × steps`` plane: points in visiting order and their
    row-major positions.

    Even rows are walked forwards, adding ``d₂`` before each evaluation, odd rows backwards,
    evaluating before stepping back: row ``i``, column ``j`` is at
    ``(i - centre, j + [i even] - centre)``. The order matters only to metrics that draw
    random numbers (dropout in training mode), which then draw them as the package does.
    """
    _check_fits(steps, steps)
    rows = np.repeat(np.arange(steps), steps)
    columns = np.tile(np.arange(steps), (steps, 1))
    columns[1::2] = columns[1::2, ::-1]
    columns = columns.reshape(-1)
    points = np.stack([rows - centre, columns + (rows % 2 == 0) - centre], axis=1).astype(np.float64)
    return points, rows * steps + columns


def _check_fits(rows: int, columns: int) -> None:
    """Refuse, before anything is allocated, a landscape of ``rows × columns`` points whose
    coordinates, positions and values would not fit in host memory."""
    check_fits(
        (rows, columns),
        torch.device("cpu"),
        DEFAULT_BUDGET["cpu"],
        None,
        name="`steps`",
        bytes_per_point=_BYTES_PER_POINT,
    )


def _on_grid(values: np.ndarray, positions: np.ndarray, steps: int) -> np.ndarray:
    """Values in visiting order placed at their row-major positions, shape ``(steps, steps, ...)``."""
    grid = np.empty_like(values)
    grid[positions] = values
    return grid.reshape(steps, steps, *values.shape[1:])


def _uniform_like(landscape: _Landscape) -> list[torch.Tensor]:
    """The package's ``rand_u_like`` of the start point (drawn in the first parameter's
    dtype), in float64."""
    return [d.to(torch.float64) for d in rand_u_like([t.shape for t in landscape.start], landscape.dtype)]


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
