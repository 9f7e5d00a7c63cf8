"""The vectorised engine: losses at many plane points in a few kernel calls.

Work is cut two ways so that memory stays bounded whatever the grid and data
size: the evaluation data streams once as chunks of samples (`stream`), and the
points are cut into tiles; every chunk is evaluated against every tile and the
weighted per-point sums are accumulated in float64 on the compute device.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_
from tqdm.auto import tqdm

from fastsurface._support.choices import Method, Reduction
from fastsurface._support.copying import private_copy
from fastsurface._support.devices import DeviceLike, DTypeLike, check_representable, synchronize
from fastsurface._support.values import real_values
from fastsurface.engine import _stream as stream
from fastsurface.engine._closed_form import ClosedFormSums, linear_coordinate
from fastsurface.engine._kernels import CompiledKernel, Kernel, compile_available, vmap_kernel
from fastsurface.engine._losses import Loss, PerSampleLoss
from fastsurface.engine._shared import SharedKernel, shared_forward
from fastsurface.engine._stream import PROBE_SAMPLES
from fastsurface.engine._tiles import (
    GridPoints,
    ListedPoints,
    Points,
    TileSizer,
    check_fits,
    model_errors,
)
from fastsurface.engine.axes import as_axis, axis
from fastsurface.engine.options import DEFAULT_BATCH_SIZE, EvalOptions
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane, check_plane, default_plane
from fastsurface.results import Surface

# Brute-force work (points x samples) from which "auto" compiles a fused kernel: below
# it, torch.compile's seconds of start-up cost more than the vmap kernel's run.
COMPILE_THRESHOLD = 10**9


@dataclass(frozen=True)
class Evaluation:
    """Losses at a set of points, with the counts and timing of their evaluation."""

    loss: torch.Tensor
    samples: int
    batches: int
    seconds: float
    tile_points: int
    method: str


def loss_surface(
    model: nn.Module,
    data: object,
    w1: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    w2: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    *,
    plane: Plane | None = None,
    loss: str | PerSampleLoss = "mse",
    reduction: Reduction = "mean",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: DeviceLike = "auto",
    dtype: DTypeLike = torch.float32,
    memory_budget: int | None = None,
    tile_points: int | None = None,
    method: Method = "auto",
    progress: bool = False,
    train_mode: bool = False,
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
        method: the evaluation path, reported back in ``Surface.method``:

            - ``"closed_form"``: exact quadratic along a coordinate that enters the
              output linearly (MSE loss, direction inside the output ``nn.Linear``;
              the rule is ``closed_form.linear_coordinate``'s); O(|w1|·n) forward work.
              Refused with the reason where it does not apply. ``evaluate_points``
              takes it too, so listed points equal grid points bit for bit.
            - ``"vmap"``: brute force, ``functional_call`` under ``vmap`` per tile.
            - ``"compiled"``: brute force through a ``torch.compile``d fused kernel
              (seconds of compilation on first use, cached per architecture; on CPU,
              ``tanh`` within 4e-7 relative, see ``fastsurface.engine._inductor``).
            - ``"auto"``: ``"closed_form"`` where it applies; else ``"compiled"`` when the
              work (points x samples) reaches ``COMPILE_THRESHOLD`` (1e9) and the
              toolchain is present; else ``"vmap"``.
        progress: show a progress bar on stderr.
        train_mode: evaluate the model in training mode instead of eval mode. BatchNorm
            layers then normalise with the statistics of each evaluation batch and
            neither use nor update their running statistics
            (``torch.func.replace_all_batch_norm_modules_`` on the engine's copy); data
            are evaluated batch by batch (``batch_size`` for a pair); dropout draws
            independent masks per point from a generator seeded with 0 inside
            ``torch.random.fork_rng`` (global RNG state is restored). Uses ``"vmap"``.

    Returns:
        A ``Surface`` with ``loss.shape == (len(w1), len(w2))``.

    >>> from fastsurface import ANN, piecewise_dataset, axis
    >>> s = loss_surface(ANN(1, 1, 1), piecewise_dataset(200), axis(-1, 1, 0.5), axis(0, 1, 0.25))
    >>> s.loss.shape, s.labels
    ((4, 4), ('w1', 'w2'))
    """
    options = EvalOptions(
        loss, reduction, batch_size, device, dtype, memory_budget, tile_points, method, progress, train_mode
    )
    return grid_surface(model, data, w1, w2, plane, options)


def grid_surface(
    model: nn.Module,
    data: object,
    w1: Sequence[float] | np.ndarray | torch.Tensor | None,
    w2: Sequence[float] | np.ndarray | torch.Tensor | None,
    plane: Plane | None,
    options: EvalOptions,
) -> Surface:
    """``loss_surface`` with its options in ``options``."""
    first, second = checked_grid(w1, w2, options)
    plane = default_plane(model) if plane is None else plane
    check_plane(model, plane)
    check_representable("w1", first, options.compute_dtype)
    check_representable("w2", second, options.compute_dtype)
    grid = GridPoints(first, second, options.compute_device, options.compute_dtype)
    result = _evaluate(model, plane, data, grid, options)
    return Surface(
        w1=first,
        w2=second,
        loss_tensor=result.loss.reshape(len(first), len(second)),
        labels=plane.labels,
        loss_name=options.objective.name,
        reduction=options.reduction,
        device=str(options.compute_device),
        dtype=str(options.compute_dtype).removeprefix("torch."),
        samples=result.samples,
        batches=result.batches,
        seconds=result.seconds,
        method=result.method,
        tile_points=result.tile_points,
        train_mode=options.train_mode,
    )


def evaluate_points(
    model: nn.Module,
    plane: Plane,
    data: object,
    points: np.ndarray | torch.Tensor,
    *,
    loss: str | PerSampleLoss = "mse",
    reduction: Reduction = "mean",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: DeviceLike = "auto",
    dtype: DTypeLike = torch.float32,
    memory_budget: int | None = None,
    tile_points: int | None = None,
    method: Method = "auto",
    progress: bool = False,
    train_mode: bool = False,
) -> Evaluation:
    """Losses at arbitrary plane points, by the same engine as ``loss_surface``.

    Args:
        points: coordinates ``(w1, w2)``, shape ``(P, 2)``.
        Other arguments as in ``loss_surface``.

    Returns:
        An ``Evaluation`` whose ``loss`` has shape ``(P,)``, float64, on the device.
    """
    options = EvalOptions(
        loss, reduction, batch_size, device, dtype, memory_budget, tile_points, method, progress, train_mode
    )
    return point_losses(model, plane, data, points, options)


def checked_grid(
    w1: Sequence[float] | np.ndarray | torch.Tensor | None,
    w2: Sequence[float] | np.ndarray | torch.Tensor | None,
    options: EvalOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """The grid's axes, float64 (the article's ``axis(-2, 2, 0.05)`` where ``None``), checked,
    and refused up front when the grid's surface would not fit in memory."""
    first = as_axis("w1", axis(-2, 2, 0.05) if w1 is None else w1)
    second = as_axis("w2", axis(-2, 2, 0.05) if w2 is None else w2)
    check_fits((len(first), len(second)), options.compute_device, options.budget, options.tile_points)
    return first, second


def point_losses(
    model: nn.Module, plane: Plane, data: object, points: np.ndarray | torch.Tensor, options: EvalOptions
) -> Evaluation:
    """``evaluate_points`` with its options in ``options``."""
    check_plane(model, plane)
    coordinates = torch.from_numpy(real_values("points", points, "coordinates of shape (P, 2)"))
    if coordinates.ndim != 2 or coordinates.shape[1] != 2 or not torch.isfinite(coordinates).all():
        raise FastsurfaceError(
            f"`points` must be finite coordinates of shape (P, 2), got shape {tuple(coordinates.shape)}"
        )
    check_representable("points", coordinates, options.compute_dtype)
    return _evaluate(
        model, plane, data, ListedPoints(coordinates, options.compute_device, options.compute_dtype), options
    )


def _evaluate(model: nn.Module, plane: Plane, data: object, points: Points, options: EvalOptions) -> Evaluation:
    started = time.perf_counter()
    module = _evaluation_copy(model, options.compute_device, options.compute_dtype, options.train_mode)
    for part in (plane.origin, plane.first, plane.second):
        for tensor in part.values():
            check_representable("plane", tensor, options.compute_dtype)
    local_plane = plane.to(options.compute_device, options.compute_dtype)
    sizer = TileSizer(module, local_plane, options.budget)
    unbatched = functools.partial(_check_unbatched, module, local_plane, options.objective)
    strategy: _BruteForce | _ClosedForm | None = None
    samples = batches = 0
    bar = tqdm(desc="surface", unit="tile", disable=not options.progress, leave=False)
    with torch.no_grad(), bar, _private_randomness(options):
        for chunk in _checked_chunks(data, options, module, local_plane, _chunk_rule(data, sizer, options)):
            if strategy is None:
                strategy = _strategy(module, local_plane, data, points, chunk, sizer, options)
            _add(strategy, chunk, bar.update, unbatched)
            samples += chunk.samples
            batches += chunk.batches
    assert strategy is not None  # _checked_chunks refuses empty data
    loss = strategy.total().div_(samples if options.reduction == "mean" else batches)
    synchronize(options.compute_device)
    return Evaluation(loss, samples, batches, time.perf_counter() - started, strategy.tile, strategy.method)


def _strategy(
    module: nn.Module,
    plane: Plane,
    data: object,
    points: Points,
    chunk: stream.Chunk,
    sizer: TileSizer,
    options: EvalOptions,
) -> _BruteForce | _ClosedForm:
    """The evaluation path, chosen on the first chunk (see ``loss_surface``'s ``method``)."""
    method = options.method
    if options.train_mode:
        tile = options.tile_points or sizer.tile_points(chunk.samples)
        return _BruteForce(vmap_kernel(module, plane, options.objective, randomness="different"), points, tile, "vmap")
    if method in ("auto", "closed_form"):
        coordinate, reason = linear_coordinate(module, plane, options.objective, chunk.x[:PROBE_SAMPLES])
        if coordinate is not None:
            return _ClosedForm(
                module, plane, points, coordinate, options.tile_points or sizer.tile_points(chunk.samples) // 3
            )
        if method == "closed_form":
            raise FastsurfaceError(f"`method` 'closed_form' does not apply here: {reason}")
    tile = options.tile_points or sizer.tile_points(chunk.samples)
    if method == "compiled" or (method == "auto" and _worth_compiling(points, data, chunk, plane.device)):
        kernel = CompiledKernel(module, plane, options.objective, points.count, tile)
        return _BruteForce(kernel, points, kernel.tile, "compiled")
    return _BruteForce(_vmap_route(module, plane, options.objective), points, tile, "vmap")


def _vmap_route(module: nn.Module, plane: Plane, loss: Loss) -> Kernel:
    """The vmap kernel, sharing what the plane's points share where that is safe (``_shared``)."""
    forward = shared_forward(module, plane)
    return vmap_kernel(module, plane, loss) if forward is None else SharedKernel(forward, loss)


def _chunk_rule(data: object, sizer: TileSizer, options: EvalOptions) -> Callable[[torch.Tensor], int]:
    """Samples per chunk: from the memory budget; in train mode, exactly one batch (batch
    statistics must be those of a batch)."""
    if not options.train_mode:
        return sizer.chunk_samples

    def one_batch(x: torch.Tensor) -> int:
        sizer.chunk_samples(x)  # measures the bytes a sample needs
        return options.batch_size if stream.is_pair(data) else 2**62

    return one_batch


@contextlib.contextmanager
def _private_randomness(options: EvalOptions) -> Iterator[None]:
    """In train mode, random layers draw from a generator seeded with 0 whose state is
    discarded afterwards, so results repeat and the caller's RNG state is untouched."""
    if not options.train_mode:
        yield
        return
    devices = [options.compute_device] if options.compute_device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        yield


def _add(
    strategy: _BruteForce | _ClosedForm,
    chunk: stream.Chunk,
    done: Callable[[], object],
    unbatched: Callable[[stream.Chunk], None],
) -> None:
    """``strategy.add``, turning vmap's refusals into an error that says what to do.

    The model already ran unbatched on the chunk's first samples (``check_prediction_shape``),
    so an error of a vmap'd path other than running out of memory most likely comes from
    batching, even where torch's message does not say so (an in-place update of a buffer
    with batched values fails as a shape mismatch)."""
    try:
        strategy.add(chunk, done)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        message = str(error)
        if isinstance(error, torch.OutOfMemoryError) or "allocate" in message:
            raise
        unbatched(chunk)  # the model or loss may fail on these samples without vmap too: say so
        batched = strategy.method != "compiled" or "vmap" in message or "batching rule" in message.lower()
        if not batched:
            raise
        reason = message.rstrip(". ")
        raise FastsurfaceError(
            f"`model` cannot be evaluated under torch.func.vmap (it ran unbatched on the first samples of this "
            f"chunk of `data`): {reason}. Typical causes: a layer that updates a "
            "buffer in place with batched values (a running average, a counter) or random layers without "
            "train_mode=True; evaluation is in eval "
            "mode unless train_mode=True, which also swaps BatchNorm's running statistics for batch statistics."
        ) from error


def _check_unbatched(module: nn.Module, plane: Plane, loss: Loss, chunk: stream.Chunk) -> None:
    """Run the chunk through the model and loss at one point without vmap, to blame the
    right cause when the batched run failed: a model that raises on some sample, or a loss
    that fails there, is reported as such (a ``FastsurfaceError`` naming `model` or `loss`)."""
    zero = torch.zeros((), dtype=plane.dtype, device=chunk.x.device)
    with torch.no_grad(), model_errors(chunk.x):
        prediction = functional_call(module, plane.params(zero, zero), (chunk.x,))
    loss.check_shapes(prediction, chunk.y)
    try:
        loss.per_sample(prediction, chunk.y)
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise FastsurfaceError(f"`loss` fails on this chunk of `data` at the plane's origin: {error}") from error


def _worth_compiling(points: Points, data: object, chunk: stream.Chunk, device: torch.device) -> bool:
    samples = len(data[0]) if stream.is_pair(data) else chunk.samples  # a pair: all its samples
    return points.count * samples >= COMPILE_THRESHOLD and compile_available(device)


class _BruteForce:
    """Per-point weighted loss sums, tile by tile, accumulated in float64."""

    def __init__(self, kernel: Kernel, points: Points, tile: int, method: str) -> None:
        self.kernel, self.points, self.tile, self.method = kernel, points, tile, method
        self.sums = torch.zeros(points.count, dtype=torch.float64, device=points.device)

    def add(self, chunk: stream.Chunk, done: Callable[[], object]) -> None:
        for start in range(0, self.points.count, self.tile):
            stop = min(self.points.count, start + self.tile)
            a, b = self.points.tile(start, stop)
            self.sums[start:stop] += self.kernel(a, b, chunk.x, chunk.y, chunk.weight)
            done()

    def total(self) -> torch.Tensor:
        return self.sums


class _ClosedForm:
    """The exact quadratic along the affine coordinate (``closed_form.py``), on a grid or
    at listed points (so a trajectory's losses are the surface's, bit for bit)."""

    method = "closed_form"

    def __init__(self, module: nn.Module, plane: Plane, points: Points, coordinate: int, tile: int) -> None:
        self.swapped = coordinate == 0
        if self.swapped:
            plane = Plane(plane.origin, plane.second, plane.first, plane.labels[::-1])
        first, second = (
            (points.first, points.second) if isinstance(points, GridPoints) else points.tile(0, points.count)
        )
        self.free, self.linear = (second, first) if self.swapped else (first, second)
        self.on_grid = isinstance(points, GridPoints)
        self.tile = max(1, tile)
        self.sums = ClosedFormSums(module, plane, self.free, self.tile)

    def add(self, chunk: stream.Chunk, done: Callable[[], object]) -> None:
        self.sums.add(chunk, done)

    def total(self) -> torch.Tensor:
        if not self.on_grid:
            return self.sums.at(self.linear)
        grid = self.sums.grid(self.linear)
        return (grid.T if self.swapped else grid).reshape(-1)


def _evaluation_copy(model: nn.Module, device: torch.device, dtype: torch.dtype, train_mode: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise FastsurfaceError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    module = private_copy(model).to(device=device, dtype=dtype).train(train_mode)
    if train_mode:
        replace_all_batch_norm_modules_(module)
    return module


def _checked_chunks(
    data: object, options: EvalOptions, module: nn.Module, plane: Plane, chunk_samples: Callable[[torch.Tensor], int]
) -> Iterator[stream.Chunk]:
    """Stream the data; check each chunk against the model (a forward pass on its first
    samples: inputs the model takes, targets that fit its predictions) before any tile
    runs on it."""
    empty = True
    for chunk in stream.chunks(
        data,
        reduction=options.reduction,
        batch_size=options.batch_size,
        chunk_samples=chunk_samples,
        device=options.compute_device,
        dtype=options.compute_dtype,
    ):
        check_prediction_shape(module, plane, options.objective, chunk.x, chunk.y)
        empty = False
        yield chunk
    if empty:
        raise FastsurfaceError("`data` must hold at least one batch, got none")


def check_prediction_shape(
    module: nn.Module, plane: Plane, loss: Loss, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Refuse a model that fails on the data, and targets that do not fit its predictions
    under ``loss`` (for MSE: any shape difference, which would broadcast), from a forward
    pass on a few samples; ``loss.check_targets`` sees all of ``y``.

    Returns:
        The predictions for the first few samples of ``x``.
    """
    zero = torch.zeros((), dtype=plane.dtype, device=x.device)
    with torch.no_grad(), model_errors(x):
        prediction = functional_call(module, plane.params(zero, zero), (x[:PROBE_SAMPLES],))
    if not isinstance(prediction, torch.Tensor):
        raise FastsurfaceError(f"`model` must return a tensor of predictions, got {type(prediction).__name__}")
    loss.check_shapes(prediction, y[:PROBE_SAMPLES])
    loss.check_targets(prediction, y)
    return prediction
