"""The vectorised engine: losses at many plane points in a few kernel calls.

Work is cut two ways so that memory stays bounded whatever the grid and data
size: the evaluation data streams once as chunks of samples (`stream`), and the
points are cut into tiles; every chunk is evaluated against every tile and the
weighted per-point sums are accumulated in float64 on the compute device.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from fastsurface import stream
from fastsurface.devices import DeviceLike, DTypeLike, resolve_device, resolve_dtype, synchronize
from fastsurface.errors import FastsurfaceError, check_positive_int
from fastsurface.grid import as_axis, axis
from fastsurface.losses import Loss, PerSampleLoss, resolve_loss
from fastsurface.memory import check_fits
from fastsurface.plane import Plane, check_plane, default_plane
from fastsurface.surface import Surface

METHODS = ("auto", "vmap")
DEFAULT_BATCH_SIZE = 64
# Bytes of working memory one tile may use when the caller sets no budget.
DEFAULT_BUDGET = {"cpu": 256 * 2**20, "cuda": 1024 * 2**20}
# Intermediates per activation element in one fused-free forward + loss (inputs,
# activations, residuals, their squares); measured peaks stay below this.
_WORKSPACE_FACTOR = 4
# Samples per chunk are capped so a tile still spans this many points.
_MIN_TILE_POINTS = 256
_PROBE_SAMPLES = 4

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Evaluation:
    """Losses at a set of points, with the counts and timing of their evaluation."""

    loss: torch.Tensor
    samples: int
    batches: int
    seconds: float
    tile_points: int
    method: str


@dataclass(frozen=True)
class _Settings:
    loss: Loss
    reduction: str
    batch_size: int
    device: torch.device
    dtype: torch.dtype
    memory_budget: int
    tile_points: int | None
    method: str
    progress: bool


def loss_surface(
    model: nn.Module,
    data: object,
    w1: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    w2: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    *,
    plane: Plane | None = None,
    loss: str | PerSampleLoss = "mse",
    reduction: str = "mean",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: DeviceLike = "auto",
    dtype: DTypeLike = torch.float32,
    memory_budget: int | None = None,
    tile_points: int | None = None,
    method: str = "auto",
    progress: bool = False,
) -> Surface:
    """Evaluate the loss on every point of the grid ``w1 × w2`` of a plane.

    The model is never modified: it is copied to ``device`` and ``dtype`` and run in
    eval mode through ``torch.func.functional_call`` under ``torch.func.vmap``.

    Args:
        model: any ``nn.Module`` mapping inputs ``(B, ...)`` to predictions with the
            targets' shape.
        data: an ``(x, y)`` pair of numpy arrays or tensors with samples along axis 0
            (a 1-D array is ``n`` samples of one value, read as shape ``(n, 1)``), or an
            iterable of ``(x, y)`` batches such as a ``DataLoader``, read once.
        w1, w2: coordinate values of the grid, 1-D, finite, strictly increasing;
            the article's ``axis(-2, 2, 0.05)`` by default.
        plane: the slice of parameter space; for a model with exactly two scalar
            weights (the seed ``ANN(1, 1, 1)``) the plane of those two by default.
        loss: per-sample loss: ``"mse"`` (mean squared error per sample; predictions
            and targets of the same shape), ``"cross_entropy"`` (logits against integer
            class targets) or a callable ``(prediction, target) -> (S,)``.
        reduction: ``"mean"``, the exact mean of the per-sample losses over all
            samples, or ``"batch_mean"``, the mean over batches of each batch's mean
            (the article's loop; the last batch may be smaller).
        batch_size: batch size that cuts a data pair into batches for
            ``"batch_mean"``; ignored for iterables, whose own batches count.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
            or a ``torch.device``.
        dtype: compute dtype of the forward passes, float32 or float64; sums are
            accumulated in float64 either way.
        memory_budget: bytes of working memory for one tile (default 256 MiB on CPU,
            1 GiB on CUDA).
        tile_points: points per tile, overriding the size derived from the budget.
        method: ``"auto"`` or ``"vmap"``.
        progress: show a progress bar on stderr.

    Returns:
        A ``Surface`` with ``loss.shape == (len(w1), len(w2))``.

    >>> from fastsurface import ANN, piecewise_dataset, axis
    >>> s = loss_surface(ANN(1, 1, 1), piecewise_dataset(200), axis(-1, 1, 0.5), axis(0, 1, 0.25))
    >>> s.loss.shape, s.labels
    ((4, 4), ('w1', 'w2'))
    """
    settings = _settings(loss, reduction, batch_size, device, dtype, memory_budget, tile_points, method, progress)
    first = as_axis("w1", axis(-2, 2, 0.05) if w1 is None else w1)
    second = as_axis("w2", axis(-2, 2, 0.05) if w2 is None else w2)
    check_fits((len(first), len(second)), settings.device, settings.memory_budget, settings.tile_points)
    plane = default_plane(model) if plane is None else plane
    check_plane(model, plane)
    grid = _GridPoints(first, second, settings.device, settings.dtype)
    result = _evaluate(model, plane, data, grid, settings)
    return Surface(
        w1=first,
        w2=second,
        loss_tensor=result.loss.reshape(len(first), len(second)),
        labels=plane.labels,
        loss_name=settings.loss.name,
        reduction=settings.reduction,
        device=str(settings.device),
        dtype=str(settings.dtype).removeprefix("torch."),
        samples=result.samples,
        batches=result.batches,
        seconds=result.seconds,
        method=result.method,
        tile_points=result.tile_points,
    )


def evaluate_points(
    model: nn.Module,
    plane: Plane,
    data: object,
    points: np.ndarray | torch.Tensor,
    *,
    loss: str | PerSampleLoss = "mse",
    reduction: str = "mean",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: DeviceLike = "auto",
    dtype: DTypeLike = torch.float32,
    memory_budget: int | None = None,
    tile_points: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Losses at arbitrary plane points, by the same engine as ``loss_surface``.

    Args:
        points: coordinates ``(a, b)``, shape ``(P, 2)``.
        Other arguments as in ``loss_surface``.

    Returns:
        An ``Evaluation`` whose ``loss`` has shape ``(P,)``, float64, on the device.
    """
    settings = _settings(loss, reduction, batch_size, device, dtype, memory_budget, tile_points, "auto", progress)
    check_plane(model, plane)
    coordinates = torch.as_tensor(points, dtype=torch.float64)
    if coordinates.ndim != 2 or coordinates.shape[1] != 2 or not torch.isfinite(coordinates).all():
        raise FastsurfaceError(
            f"`points` must be finite coordinates of shape (P, 2), got shape {tuple(coordinates.shape)}"
        )
    return _evaluate(model, plane, data, _ListedPoints(coordinates, settings.device, settings.dtype), settings)


def _settings(
    loss: str | PerSampleLoss,
    reduction: str,
    batch_size: int,
    device: DeviceLike,
    dtype: DTypeLike,
    memory_budget: int | None,
    tile_points: int | None,
    method: str,
    progress: bool,
) -> _Settings:
    stream.check_reduction(reduction)
    check_positive_int("batch_size", batch_size)
    if memory_budget is not None:
        check_positive_int("memory_budget", memory_budget)
    if tile_points is not None:
        check_positive_int("tile_points", tile_points)
    if method not in METHODS:
        raise FastsurfaceError(f"`method` must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    resolved = resolve_device(device)
    budget = memory_budget if memory_budget is not None else DEFAULT_BUDGET[resolved.type]
    return _Settings(
        resolve_loss(loss),
        reduction,
        int(batch_size),
        resolved,
        resolve_dtype(dtype),
        int(budget),
        tile_points,
        method,
        bool(progress),
    )


class _GridPoints:
    """The points of ``first × second`` in row-major order, made tile by tile."""

    def __init__(self, first: np.ndarray, second: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
        self.first = torch.as_tensor(first).to(device=device, dtype=dtype)
        self.second = torch.as_tensor(second).to(device=device, dtype=dtype)
        self.count = len(first) * len(second)

    def tile(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(start, stop, device=self.first.device)
        columns = len(self.second)
        return self.first[index // columns], self.second[index % columns]


class _ListedPoints:
    """Explicit points, shape ``(P, 2)``."""

    def __init__(self, points: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
        self.points = points.to(device=device, dtype=dtype)
        self.count = len(points)

    def tile(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.points[start:stop, 0], self.points[start:stop, 1]


def _evaluate(
    model: nn.Module, plane: Plane, data: object, points: _GridPoints | _ListedPoints, settings: _Settings
) -> Evaluation:
    started = time.perf_counter()
    module = _evaluation_copy(model, settings.device, settings.dtype)
    local_plane = plane.to(settings.device, settings.dtype)
    sizer = _TileSizer(module, local_plane, settings.memory_budget)
    kernel = vmap_kernel(module, local_plane, settings.loss)
    accumulated = torch.zeros(points.count, dtype=torch.float64, device=settings.device)
    samples = batches = tile = 0
    bar = tqdm(desc="surface", unit="chunk", disable=not settings.progress, leave=False)
    with torch.no_grad(), bar:
        for chunk in _checked_chunks(data, settings, module, local_plane, sizer.chunk_samples):
            tile = settings.tile_points or sizer.tile_points(chunk.samples)
            for start in range(0, points.count, tile):
                stop = min(points.count, start + tile)
                a, b = points.tile(start, stop)
                accumulated[start:stop] += kernel(a, b, chunk.x, chunk.y, chunk.weight)
            samples += chunk.samples
            batches += chunk.batches
            bar.update()
    loss = accumulated / (samples if settings.reduction == "mean" else batches)
    synchronize(settings.device)
    return Evaluation(loss, samples, batches, time.perf_counter() - started, tile, "vmap")


def vmap_kernel(module: nn.Module, plane: Plane, loss: Loss) -> Kernel:
    """A function ``(a, b, x, y, weight) -> (T,)``: per point, the weighted sum of
    per-sample losses, for point coordinates ``a``, ``b`` of shape ``(T,)``."""

    def point_loss(
        a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        prediction = functional_call(module, plane.params(a, b), (x,))
        return loss.per_sample(prediction, y) @ weight

    return vmap(point_loss, in_dims=(0, 0, None, None, None))


def _evaluation_copy(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise FastsurfaceError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def _checked_chunks(
    data: object, settings: _Settings, module: nn.Module, plane: Plane, chunk_samples: Callable[[torch.Tensor], int]
) -> Iterator[stream.Chunk]:
    """Stream the data; check the first chunk's shapes before any tile runs."""
    empty = True
    for chunk in stream.chunks(
        data,
        reduction=settings.reduction,
        batch_size=settings.batch_size,
        chunk_samples=chunk_samples,
        device=settings.device,
        dtype=settings.dtype,
    ):
        if empty:
            check_prediction_shape(module, plane, settings.loss, chunk.x, chunk.y)
            empty = False
        yield chunk
    if empty:
        raise FastsurfaceError("`data` must hold at least one batch, got none")


def check_prediction_shape(module: nn.Module, plane: Plane, loss: Loss, x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse targets that do not fit the predictions under ``loss`` (for MSE: any
    shape difference, which would broadcast), from a forward pass on a few samples."""
    zero = torch.zeros((), dtype=plane.dtype, device=x.device)
    with torch.no_grad():
        prediction = functional_call(module, plane.params(zero, zero), (x[:_PROBE_SAMPLES],))
    loss.check_shapes(prediction, y[:_PROBE_SAMPLES])


class _TileSizer:
    """Chunk and tile sizes that keep one kernel call within the memory budget."""

    def __init__(self, module: nn.Module, plane: Plane, budget: int) -> None:
        self.module = module
        self.budget = budget
        self.plane_bytes = 2 * sum(t.numel() * t.element_size() for t in plane.origin.values())
        self.sample_bytes = 0

    def chunk_samples(self, x: torch.Tensor) -> int:
        """Samples per chunk, from example inputs: few enough that a tile still spans
        ``_MIN_TILE_POINTS`` points."""
        self.sample_bytes = _bytes_per_sample(self.module, x[:_PROBE_SAMPLES])
        return max(1, self.budget // (_MIN_TILE_POINTS * self.sample_bytes))

    def tile_points(self, samples: int) -> int:
        per_point = samples * self.sample_bytes + self.plane_bytes
        if per_point > self.budget:
            raise FastsurfaceError(
                f"`memory_budget` of {self.budget} bytes is below what one point needs on a chunk of "
                f"{samples} samples ({per_point} bytes); raise it"
            )
        return int(self.budget // per_point)


def _bytes_per_sample(module: nn.Module, x: torch.Tensor) -> int:
    """Working bytes one sample needs at one point: every module output, the input,
    times a workspace factor (measured by a forward pass on a few samples)."""
    elements = [x.numel()]

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            elements.append(output.numel())

    handles = [m.register_forward_hook(count) for m in module.modules()]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return max(1, _WORKSPACE_FACTOR * sum(elements) * x.element_size() // len(x))
