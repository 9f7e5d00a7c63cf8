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
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from fastsurface._support.choices import Method, Reduction
from fastsurface._support.copying import copy_inputs_if_written, private_copy
from fastsurface._support.devices import DeviceLike, DTypeLike, check_representable, synchronize
from fastsurface._support.identity import architecture, describe_data
from fastsurface._support.memory import usable_bytes
from fastsurface._support.progress import Progress, tile_total
from fastsurface._support.values import real_values
from fastsurface.engine import _stream as stream
from fastsurface.engine._closed_form import ClosedFormKernel, ClosedFormSums, affine_second, linear_coordinate
from fastsurface.engine._inductor import UntraceableModelError
from fastsurface.engine._kernels import CompiledKernel, Kernel, compile_available, vmap_kernel
from fastsurface.engine._losses import Loss, PerSampleLoss
from fastsurface.engine._shared import SharedKernel, shared_forward
from fastsurface.engine._stream import PROBE_SAMPLES
from fastsurface.engine._tiles import (
    BATCHED_CHUNK_SAMPLES,
    CANDIDATE_TILES,
    MIN_TILE_POINTS,
    GridPoints,
    ListedPoints,
    Points,
    TileChoice,
    TileSizer,
    check_fits,
    model_errors,
)
from fastsurface.engine.axes import as_axis, axis
from fastsurface.engine.options import DEFAULT_BATCH_SIZE, EvalOptions
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane, check_plane, default_plane
from fastsurface.results import DataDescription, Surface

# Brute-force work (points x samples) from which "auto" compiles a fused kernel: below
# it, compilation's seconds of start-up cost more than the vmap kernel's run.
COMPILE_THRESHOLD = 10**9


@dataclass(frozen=True)
class Evaluation:
    """Losses at a set of points, with the counts and timing of their evaluation; ``loss``
    has shape ``(P,)``, or ``(P, W)`` for combined losses (``_losses.combine``)."""

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
              Refused with the reason where it does not apply. At listed points
              (``evaluate_points``) it equals the grid's values bit for bit.
            - ``"vmap"``: brute force, ``functional_call`` under ``vmap`` per tile; for an
              ``nn.Sequential`` the layers before the first one the plane moves, and that
              layer when it is an ``nn.Linear`` or ``nn.ConvNd``, run once per chunk of
              samples instead of once per point (``fastsurface.engine._shared``).
            - ``"compiled"``: brute force through a fused inductor kernel, traced once
              per input shape and compiled without dynamo (a forward that branches on
              tensor values is refused, and ``"auto"`` then uses ``"vmap"``; seconds of
              compilation on first use, cached per architecture in the process;
              inductor's on-disk FX graph cache, on by default, keeps the generated
              code across processes, under ``TORCHINDUCTOR_CACHE_DIR``; on CPU, ``tanh``
              within 4e-7 relative, see ``fastsurface.engine._inductor``).
            - ``"auto"``: ``"compiled"`` when the work (points x samples) reaches
              ``COMPILE_THRESHOLD`` (1e9), the toolchain is present, the model has no
              convolution (slower compiled) and, where the shared route's batched
              products apply (an ``nn.Sequential`` of ``Linear`` layers and
              activations), a ``Tanh`` (only its faster ``tanh`` beats those products),
              unless ``"closed_form"`` applies and saves
              work (always on a grid; at listed points where two share each value of its
              free coordinate on average, since its work is per such value); else
              ``"closed_form"`` where it applies; else ``"vmap"``.
        progress: show a progress bar on stderr.
        train_mode: evaluate the model in training mode instead of eval mode. BatchNorm
            layers then normalise with the statistics of each evaluation batch and
            neither use nor update their running statistics
            (``torch.func.replace_all_batch_norm_modules_`` on the engine's copy); data
            are evaluated batch by batch (``batch_size`` for a pair); dropout draws
            independent masks per point from a generator seeded with the chunk's index
            (0 for the first chunk of samples) inside ``torch.random.fork_rng`` (global
            RNG state is restored), the same on every call. Uses ``"vmap"``.

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
    """``loss_surface`` with its options in ``options``; for combined losses
    (``_losses.combine``) the loss grid has one more axis, ``(n1, n2, W)``, that the caller
    splits (``analysis.metrics``)."""
    first, second = checked_grid(w1, w2, options)
    return _grid(Prepared(model, data, plane, options), first, second)


def _grid(prepared: Prepared, first: np.ndarray, second: np.ndarray) -> Surface:
    """The surface on the checked grid ``first × second``."""
    options, plane = prepared.options, prepared.plane
    check_representable("w1", first, options.compute_dtype)
    check_representable("w2", second, options.compute_dtype)
    grid = GridPoints(first, second, options.compute_device, options.compute_dtype)
    result = prepared.evaluate(grid)
    return Surface(
        w1=first,
        w2=second,
        loss_tensor=result.loss.reshape(len(first), len(second), *result.loss.shape[1:]),
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
        plane=plane,
        loss_function=None if isinstance(options.loss, str) else options.loss,
        data_description=prepared.description,
        metric=options.objective.metric,
        higher_is_better=options.objective.higher_is_better,
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
    coordinates = checked_points(points, options)
    return Prepared(model, data, plane, options).evaluate(
        ListedPoints(coordinates, options.compute_device, options.compute_dtype)
    )


def checked_points(points: object, options: EvalOptions) -> torch.Tensor:
    """Plane coordinates ``(P, 2)`` (an array, tensor or nested sequence) as a float64
    tensor, checked: finite and representable in the compute dtype."""
    coordinates = torch.from_numpy(real_values("points", points, "coordinates of shape (P, 2)"))
    if coordinates.ndim != 2 or coordinates.shape[1] != 2 or not torch.isfinite(coordinates).all():
        raise FastsurfaceError(
            f"`points` must be finite coordinates of shape (P, 2), got shape {tuple(coordinates.shape)}"
        )
    check_representable("points", coordinates, options.compute_dtype)
    return coordinates


class Evaluator:
    """A model, its data and a plane prepared once, for many evaluations.

    Construction does what every ``loss_surface`` call otherwise repeats: the checks of the
    model, plane and options and the private copy of the model on the compute device. The
    first evaluation reads, checks and moves ``data`` to the device and keeps its chunks
    there while they fit (``kept_data_limit``: a one-shot iterator must fit; other data
    are read again each call when they do not); the method's structure probe also runs once. Each
    later call evaluates only its points, with the same numbers as ``loss_surface`` and
    ``evaluate_points``. Its kernels keep their working buffers between calls, so one
    ``Evaluator`` serves one call at a time (from one thread, as the explorer's worker does).

    Args:
        model, data, plane: as in ``loss_surface``; the model is copied now, so later
            changes to it are not seen.
        **options: ``loss_surface``'s evaluation options (``loss``, ``reduction``, ...).

    >>> from fastsurface import ANN, piecewise_dataset, axis
    >>> evaluator = Evaluator(ANN(1, 1, 1), piecewise_dataset(200))
    >>> evaluator.surface(axis(-1, 1, 0.5), axis(0, 1, 0.25)).loss.shape
    (4, 4)
    >>> evaluator.losses([[0.5, 0.25], [1.0, -1.0]]).shape
    (2,)
    """

    def __init__(self, model: nn.Module, data: object, *, plane: Plane | None = None, **options: object) -> None:
        self._prepared = Prepared(model, data, plane, EvalOptions.from_keywords(options), keep_data=True)

    @property
    def plane(self) -> Plane:
        """The plane evaluated (the model's default plane when none was given)."""
        return self._prepared.plane

    def surface(
        self,
        w1: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        w2: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    ) -> Surface:
        """The loss on the grid ``w1 × w2`` (the article's axes by default), as ``loss_surface``."""
        first, second = checked_grid(w1, w2, self._prepared.options)
        return _grid(self._prepared, first, second)

    def losses(self, points: object) -> np.ndarray:
        """The loss at plane points ``(P, 2)``: float64, shape ``(P,)``, as ``evaluate_points``."""
        options = self._prepared.options
        listed = ListedPoints(checked_points(points, options), options.compute_device, options.compute_dtype)
        return self._prepared.evaluate(listed).loss.cpu().numpy()


class Prepared:
    """What evaluations of one model, data and plane share: the model's evaluation copy,
    the plane on the compute device, the tile sizer, the method's probe and kernel and,
    with ``keep_data``, the data's chunks on the device."""

    def __init__(
        self, model: nn.Module, data: object, plane: Plane | None, options: EvalOptions, *, keep_data: bool = False
    ) -> None:
        plane = default_plane(model) if plane is None else plane
        check_plane(model, plane)
        self.plane, self.data, self.options = plane, data, options
        self.module = _evaluation_copy(model, options.compute_device, options.compute_dtype, options.train_mode)
        for part in (plane.origin, plane.first, plane.second):
            for tensor in part.values():
                check_representable("plane", tensor, options.compute_dtype)
        self.local_plane = plane.to(options.compute_device, options.compute_dtype)
        self.sizer = TileSizer(
            self.module, self.local_plane, options.budget, *_chunk_plan(self.module, self.local_plane, options)
        )
        self.unbatched = functools.partial(_check_unbatched, self.module, self.local_plane, options.objective)
        self.keep_data = keep_data
        self._chunks: list[stream.Chunk] | None = None
        self._coordinate: tuple[int | None, str] | None = None
        self._vmap: Kernel | None = None
        self._closed_form: dict[int, ClosedFormKernel] = {}  # by affine coordinate
        self._architecture: str | None = None
        self._traceable = True  # until the compiled route refuses the model
        self._inputs_probed = False

    def evaluate(self, points: Points) -> Evaluation:
        """Losses at ``points``: per-point weighted sums over every chunk, divided by the
        reduction's count."""
        started = time.perf_counter()
        options = self.options
        strategy: _BruteForce | _ClosedForm | None = None
        samples = batches = 0
        bar = Progress("surface", "tile", options.progress)
        with torch.no_grad(), bar, _private_randomness(options) as seed_chunk:
            for index, chunk in enumerate(self.chunks()):
                if strategy is None:
                    strategy = self.strategy(points, chunk)
                    _plan(bar, strategy, self.data, chunk)
                seed_chunk(index)
                try:
                    _add(strategy, chunk, bar.update, self.unbatched)
                except UntraceableModelError:  # on the first tile: nothing was added yet
                    if options.method != "auto" or samples:
                        raise
                    self._traceable = False  # auto's choice falls back to vmap, now and for later calls
                    strategy = self.strategy(points, chunk)
                    _add(strategy, chunk, bar.update, self.unbatched)
                samples += chunk.samples
                batches += chunk.batches
        assert strategy is not None  # _checked_chunks refuses empty data
        loss = strategy.total().div_(samples if options.reduction == "mean" else batches)
        synchronize(options.compute_device)
        return Evaluation(loss, samples, batches, time.perf_counter() - started, strategy.tile, strategy.method)

    @functools.cached_property
    def description(self) -> DataDescription | None:
        """The data's description (``describe_data``), computed once: it hashes every value."""
        return describe_data(self.data)

    def chunks(self) -> Iterator[stream.Chunk]:
        """The data's chunks, checked: read from ``data`` (and kept, with ``keep_data``,
        while they fit in ``kept_data_limit``) or, once kept, from the device."""
        if self._chunks is not None:
            yield from self._chunks
            return
        rule = _chunk_rule(self.data, self.sizer, self.options)
        kept: list[stream.Chunk] | None = [] if self.keep_data else None
        size = 0
        for chunk in _checked_chunks(self.data, self.options, self.module, self.local_plane, self._sized(rule)):
            if kept is not None:
                size += sum(t.numel() * t.element_size() for t in (chunk.x, chunk.y, chunk.weight))
                kept.append(chunk)
                if size > kept_data_limit(self.options):  # read again next time: a one-shot iterator cannot be
                    stream.check_reusable("data", self.data, 2, f"its {size} bytes are too many to keep in memory")
                    kept = None
            yield chunk
        self._chunks = kept

    def _sized(self, rule: Callable[[torch.Tensor], int]) -> Callable[[torch.Tensor], int]:
        """``rule`` (samples per chunk, from the first inputs ``x``), after the probes that
        run on them (``_probe``)."""

        def samples(x: torch.Tensor) -> int:
            with model_errors(x):  # the model's first forward passes: their errors name the data
                self._probe(x)
            return rule(x)

        return samples

    def _probe(self, x: torch.Tensor) -> None:
        """What the first inputs ``x`` tell, before any other forward pass runs on data:
        whether the model writes into its inputs (then it gets a copy of them each pass,
        ``copy_inputs_if_written``), and whether ``auto`` will take the closed form (then the
        batched route's cap on chunks goes: the closed form's work is per value of the free
        coordinate, so a longer chunk only saves calls; the seed with 100,000 samples took
        0.060 s in one chunk, 0.083 s in chunks of 2,048)."""
        if not self._inputs_probed:
            copy_inputs_if_written(self.module, x)
            self._inputs_probed = True
        auto = self.options.method == "auto"
        if self.sizer.longest_chunk is not None and auto and self._affine_coordinate(x)[0] is not None:
            self.sizer.longest_chunk = None

    def _affine_coordinate(self, x: torch.Tensor) -> tuple[int | None, str]:
        """``linear_coordinate`` on the first inputs ``x``: the structure probe, once per
        prepared model."""
        if self._coordinate is None:
            self._coordinate = linear_coordinate(
                self.module, self.local_plane, self.options.objective, x[:PROBE_SAMPLES]
            )
        return self._coordinate

    def strategy(self, points: Points, chunk: stream.Chunk) -> _BruteForce | _ClosedForm:
        """The evaluation path, chosen on the first chunk (see ``loss_surface``'s ``method``)."""
        module, plane, options, sizer = self.module, self.local_plane, self.options, self.sizer
        method = options.method
        if options.train_mode:
            tile = options.tile_points or sizer.tile_points(chunk.samples)
            kernel = vmap_kernel(module, plane, options.objective, randomness="different")
            return _BruteForce(kernel, points, TileChoice(tile), "vmap")
        compiling = method == "auto" and self._traceable and _worth_compiling(module, plane, points, self.data, chunk)
        if method in ("auto", "closed_form"):
            coordinate, reason = self._affine_coordinate(chunk.x)
            if coordinate is not None and (
                method == "closed_form" or not compiling or _shares_free(points, coordinate)
            ):
                tile = options.tile_points or sizer.tile_points(chunk.samples) // 3
                if coordinate not in self._closed_form:
                    self._closed_form[coordinate] = ClosedFormKernel(module, affine_second(plane, coordinate))
                return _ClosedForm(self._closed_form[coordinate], points, coordinate, tile)
            if method == "closed_form":
                raise FastsurfaceError(f"`method` 'closed_form' does not apply here: {reason}")
        tile = options.tile_points or sizer.tile_points(chunk.samples)
        if method == "compiled" or compiling:
            kernel = CompiledKernel(module, plane, options.objective, points.count, tile)
            return _BruteForce(kernel, points, TileChoice(kernel.tile), "compiled")
        if self._vmap is None:
            self._vmap = _vmap_route(module, plane, options.objective)
        timed = options.tile_points is None and plane.device.type == "cpu"
        return _BruteForce(self._vmap, points, TileChoice(tile, self._tile_key(chunk) if timed else None), "vmap")

    def _tile_key(self, chunk: stream.Chunk) -> Hashable:
        """What the best tile size depends on: the model's structure, the kernel, the
        dtype and the chunk's size (the device is the CPU)."""
        if self._architecture is None:
            self._architecture = architecture(self.module)
        return (
            self._architecture,
            type(self._vmap),
            self.options.compute_dtype,
            self.options.objective.name,
            chunk.samples,
        )


def kept_data_limit(options: EvalOptions) -> int:
    """Bytes of data an ``Evaluator`` keeps on the device: the tile budget, or a quarter
    of the memory this run may use there when that is more."""
    limits = usable_bytes(options.compute_device)
    return options.budget if limits is None else max(options.budget, limits[0] // 4)


def _chunk_plan(module: nn.Module, plane: Plane, options: EvalOptions) -> tuple[int, int | None]:
    """How chunks are sized (``TileSizer``): the points a tile is planned for and the most
    samples a chunk holds. Where the brute force will run the batched shared route
    (``_shared``) on tiles the engine chooses, the fewest timed candidates and at most
    ``BATCHED_CHUNK_SAMPLES``; else ``MIN_TILE_POINTS`` and no cap."""
    if options.train_mode or options.tile_points is not None or options.method not in ("auto", "vmap"):
        return MIN_TILE_POINTS, None
    forward = shared_forward(module, plane)
    if forward is None or not forward.batched:
        return MIN_TILE_POINTS, None
    return CANDIDATE_TILES[0], BATCHED_CHUNK_SAMPLES


def _vmap_route(module: nn.Module, plane: Plane, loss: Loss) -> Kernel:
    """The vmap kernel, sharing what the plane's points share where that is safe (``_shared``)."""
    forward = shared_forward(module, plane)
    return vmap_kernel(module, plane, loss) if forward is None else SharedKernel(forward, loss)


def _plan(bar: Progress, strategy: _BruteForce | _ClosedForm, data: object, chunk: stream.Chunk) -> None:
    """The bar's total: kernel calls ``strategy.add`` makes per chunk (one per tile) times
    the chunks; an estimate while tile sizes are still being timed on the first chunk."""
    count = len(strategy.free) if isinstance(strategy, _ClosedForm) else strategy.points.count
    timing = isinstance(strategy, _BruteForce) and strategy.choice.timing
    total, exact = tile_total(data, stream.is_pair(data), chunk.samples, -(-count // strategy.tile))
    bar.plan(total, exact=exact and not timing, skip=int(strategy.method == "compiled"))  # compiling: not timed


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
def _private_randomness(options: EvalOptions) -> Iterator[Callable[[int], object]]:
    """In train mode, random layers draw from a generator whose state is discarded
    afterwards, so the caller's RNG state is untouched; yields ``seed_chunk(index)``, which
    seeds it with the chunk's index before the chunk's tiles run. Seeding per chunk, not
    once per call, makes the masks independent of the forward passes that checks and
    probes ran before (an ``Evaluator`` runs them on its first call only), so results
    repeat call after call."""
    if not options.train_mode:
        yield lambda _index: None
        return
    devices = [options.compute_device] if options.compute_device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield torch.manual_seed


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
    except FastsurfaceError:  # already says what to do (e.g. the compiled route cannot trace the model)
        raise
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
    if loss.rowwise:  # run without vmap (``Loss.tile_sums``)
        return
    try:
        vmap(loss.per_sample, in_dims=(0, None))(prediction[None], chunk.y)
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        raise FastsurfaceError(
            f"`loss` cannot be evaluated under torch.func.vmap, which runs it on a tile of points at once: {error} "
            "Write it with tensor operations only (no .item(), float() or Python branches on values)."
        ) from error


def _shares_free(points: Points, coordinate: int) -> bool:
    """Whether the closed form saves work over brute force: its forward passes are per
    value of the free coordinate, so at listed points only where two points share each
    value on average (points on grid lines)."""
    if isinstance(points, GridPoints):
        return True
    free = points.points[:, 1 - coordinate]
    return len(torch.unique(free)) * 2 <= points.count


def _worth_compiling(module: nn.Module, plane: Plane, points: Points, data: object, chunk: stream.Chunk) -> bool:
    """Whether ``auto`` compiles: enough work to repay compilation, the toolchain, no
    convolution (under vmap, a convolution with per-point weights becomes a grouped one,
    and the compiled kernel ran 2.4x slower than vmap on a small CNN, issue 16), and, where
    the shared route's batched products apply (``_shared``), a ``Tanh`` for the compiled
    kernel's faster ``tanh`` to win on. Measured on CPU, 41 x 41 points, 2,000 samples,
    once compiled: 8 -> 32 -> 32 -> 1 MLPs with ReLU 1.0 s against vmap's 0.5 s, 128 wide
    5.3 s against 2.5 s, sigmoid 0.61 s against 0.53 s, GELU and SiLU even; tanh 0.45 s
    against 0.9 s."""
    samples = len(data[0]) if stream.is_pair(data) else chunk.samples  # a pair: all its samples
    if points.count * samples < COMPILE_THRESHOLD:
        return False
    layers = list(module.modules())
    if any(isinstance(layer, nn.modules.conv._ConvNd) for layer in layers):
        return False
    forward = shared_forward(module, plane)
    batched = forward is not None and forward.batched
    return (not batched or any(isinstance(layer, nn.Tanh) for layer in layers)) and compile_available(plane.device)


class _BruteForce:
    """Per-point weighted loss sums, tile by tile, accumulated in float64; tile sizes from
    ``choice`` (fixed, or timed on the first tiles)."""

    def __init__(self, kernel: Kernel, points: Points, choice: TileChoice, method: str) -> None:
        self.kernel, self.points, self.choice, self.method = kernel, points, choice, method
        self.sums: torch.Tensor | None = None

    @property
    def tile(self) -> int:
        return self.choice.tile

    def add(self, chunk: stream.Chunk, done: Callable[[], object]) -> None:
        start = 0
        while start < self.points.count:
            stop = min(self.points.count, start + self.choice.next())
            began = time.perf_counter()
            a, b = self.points.tile(start, stop)
            values = self.kernel(a, b, chunk.x, chunk.y, chunk.weight)
            if self.sums is None:  # shaped by the objective: (points,), or (points, W) for combined losses
                self.sums = torch.zeros(
                    (self.points.count, *values.shape[1:]), dtype=torch.float64, device=self.points.device
                )
            self.sums[start:stop] += values
            self.choice.took(stop - start, time.perf_counter() - began)
            start = stop
            done()

    def total(self) -> torch.Tensor:
        assert self.sums is not None  # every evaluation adds a chunk
        return self.sums


class _ClosedForm:
    """The exact quadratic along the affine coordinate (``closed_form.py``), on a grid or
    at listed points (equal to the grid's values bit for bit; points sharing a value of
    the free coordinate share its sums)."""

    method = "closed_form"

    def __init__(self, kernel: ClosedFormKernel, points: Points, coordinate: int, tile: int) -> None:
        self.swapped = coordinate == 0
        first, second = (
            (points.first, points.second) if isinstance(points, GridPoints) else points.tile(0, points.count)
        )
        self.free, self.linear = (second, first) if self.swapped else (first, second)
        self.on_grid = isinstance(points, GridPoints)
        if not self.on_grid:  # listed points sharing a value of the free coordinate share its sums
            self.free, self.rows = torch.unique(self.free, return_inverse=True)
        self.tile = max(1, tile)
        self.sums = ClosedFormSums(kernel, self.free, self.tile)

    def add(self, chunk: stream.Chunk, done: Callable[[], object]) -> None:
        self.sums.add(chunk, done)

    def total(self) -> torch.Tensor:
        if not self.on_grid:
            return self.sums.at(self.linear, self.rows)
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
