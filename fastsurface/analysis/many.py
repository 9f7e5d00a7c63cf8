"""Many training runs of one model at once: ``train_many`` and ``compare_optimizers``.

The runs are independent — each has its own start, optimiser state and (optionally)
batch order — but advance together: one vectorised step (``_stacked``) moves every run
of a tile, and tiles of runs keep the working memory within a budget. The result is a
``Trajectories``: every run's path in plane coordinates, its test losses from the
surface engine, and where it diverged.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_
from tqdm.auto import tqdm

from fastsurface._support.choices import TRAINING_METHODS, Method, Reduction
from fastsurface._support.copying import private_copy
from fastsurface._support.devices import DeviceLike, DTypeLike
from fastsurface._support.memory import check_host_fits
from fastsurface._support.values import real_values
from fastsurface.analysis._optimisers import OptimizerFactory, OptimizerGroup, group_runs
from fastsurface.analysis._stacked import COORDINATES, Layout, StackedTile, step_function
from fastsurface.analysis.paths import PlaneBasis, record_count, recorder, steps_per_epoch
from fastsurface.analysis.training import check_steps, training_batches
from fastsurface.engine import _stream as stream
from fastsurface.engine._inductor import UntraceableModelError
from fastsurface.engine._kernels import compile_available
from fastsurface.engine._losses import PerSampleLoss
from fastsurface.engine._stream import PROBE_SAMPLES
from fastsurface.engine._tiles import bytes_per_sample
from fastsurface.engine.axes import as_axis
from fastsurface.engine.evaluate import COMPILE_THRESHOLD, check_prediction_shape, point_losses
from fastsurface.engine.options import DEFAULT_BATCH_SIZE, EvalOptions
from fastsurface.errors import FastsurfaceError, check_choice, check_positive_int, check_seed
from fastsurface.planes.plane import Plane, TensorDict, check_plane, default_plane
from fastsurface.results import Trajectories

SPACES = ("full", "plane")
EVALUATIONS = ("recorded", "final")
# Bytes kept per run and record: position (2 float64), loss and residual (float64 each).
_RECORD_BYTES = 32
# Bytes a run holds besides its records and trained numbers: its start, seed, place in a
# tile and its share of the recorded losses' evaluation (measured: about 850 bytes a run
# for the seed's model at a million runs, 2,200 at 90,000).
_RUN_BYTES = 1024
# Bytes per trained number of a run: value, gradient and two optimizer buffers, float64.
_TRAINED_BYTES = 32
# Working copies of a run's trainable tensors in a step: parameters, gradients, up to
# three optimiser states, and the float64 copy a record projects.
_STATE_COPIES = 8


def train_many(
    model: nn.Module,
    train: object,
    test: object,
    *,
    starts: np.ndarray | torch.Tensor | None = None,
    grid: tuple[np.ndarray, np.ndarray] | None = None,
    vectors: np.ndarray | torch.Tensor | None = None,
    plane: Plane | None = None,
    optimizer: OptimizerFactory | Sequence[OptimizerFactory] | None = None,
    epochs: int = 25,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int | Sequence[int] = 0,
    record: str | Sequence[int] = "epoch",
    space: str = "full",
    evaluate: str = "recorded",
    training_method: str = "auto",
    tile_runs: int | None = None,
    loss: str | PerSampleLoss = "mse",
    reduction: Reduction = "mean",
    device: DeviceLike = "auto",
    dtype: DTypeLike = torch.float32,
    memory_budget: int | None = None,
    method: Method = "auto",
    progress: bool = False,
) -> Trajectories:
    """Train ``K`` copies of ``model`` from ``K`` starts at once; record their paths on a plane.

    Each run is what ``record_path`` (space ``"full"``) or ``train_sgd`` (space ``"plane"``
    with SGD) computes from its start with the same batches: the training loss is the
    batch mean of the per-sample ``loss``, the model runs in training mode (batch norm
    with batch statistics; dropout draws independent masks per run, from torch's generator
    seeded with the first run's ``seed`` inside ``torch.random.fork_rng``). The runs advance
    together in one vectorised program, tile by tile; see ``fastsurface.analysis._stacked``
    for why they stay independent, and the README's "Basin maps" for the guarantees.

    Args:
        model: any module; only read.
        train: an ``(x, y)`` pair, shuffled into batches of ``batch_size`` each epoch
            by a generator seeded with ``seed`` (as ``train_sgd``), or an iterable of
            batches read once per epoch for all runs.
        test: evaluation data of the recorded losses, as ``data`` of ``loss_surface``.
        starts: plane coordinates ``(w1, w2)`` of each run's start, shape ``(K, 2)``.
        grid: axes ``(w1, w2)``: a run from every grid point, row-major (``K = n1·n2``).
        vectors: full parameter vectors to start from, flattened in
            ``named_parameters()`` order, shape ``(K, D)`` (space ``"full"`` only).
            Exactly one of ``starts``, ``grid`` and ``vectors`` is given. A start on the
            plane is ``θ₀ + w1·d₁ + w2·d₂``, the model's values elsewhere.
        plane: the plane the paths are drawn on; the model's default (the seed's two
            weights) when ``None``.
        optimizer: a factory of a torch optimiser over the parameters it is given, as
            ``record_path`` takes (plain SGD with ``lr=1e-2`` by default), or one per run:
            runs are grouped by the optimiser their factory builds (its class and
            hyperparameters), so a list of factories gives per-run learning rates.
            Elementwise optimisers only (SGD, Adam, AdamW, RMSprop, Adagrad, ...).
        epochs: passes over ``train``.
        batch_size: training batch size, and the test batches of ``"batch_mean"``.
        seed: the batch order's seed for every run, or one seed per run (``K`` values;
            an ``(x, y)`` pair only), each run then seeing ``train_sgd(seed=...)``'s batches.
        record: ``"epoch"`` (before training and after each epoch), ``"step"`` (after
            every step too) or the step numbers to keep (0 is the start).
        space: ``"full"``: every parameter trains, and positions are the least-squares
            projections onto the plane (``project_path``'s, with their residuals);
            ``"plane"``: only the two coordinates train (gradients through the plane,
            as ``train_sgd``). The same for the seed model's default plane.
        evaluate: ``"recorded"``: test losses at every recorded position; ``"final"``:
            at the last one only (the others NaN), for maps of many runs.
        training_method: ``"vmap"`` (torch's kernels), ``"compiled"`` (one fused
            inductor kernel per step, ``engine._inductor.CompiledFunction``; seconds of
            compilation, kept by inductor's disk cache across processes) or ``"auto"``:
            compiled when the work (runs x steps x batch size) reaches 1e9 and the
            toolchain is present (and ``"vmap"`` for a model the compiled route cannot
            trace).
        tile_runs: runs per tile; by default from ``memory_budget``.
        loss, reduction, device, dtype, memory_budget, method, progress: as in
            ``loss_surface`` (``method`` is how the recorded losses are evaluated).

    Returns:
        ``Trajectories`` with ``K`` runs. A run whose training loss or parameters stop
        being finite is stopped and flagged (``diverged_step``); the others are not
        touched by it.

    >>> import fastsurface as fs
    >>> runs = fs.train_many(fs.ANN(1, 1, 1), fs.piecewise_dataset(256), fs.piecewise_dataset(64, seed=1),
    ...                      grid=(fs.axis(-1, 1, 1.0), fs.axis(-1, 1, 1.0)), epochs=2)
    >>> runs.positions.shape, runs.loss.shape, runs.step.tolist()
    ((4, 3, 2), (4, 3), [0, 4, 8])
    """
    started = time.perf_counter()
    check_positive_int("epochs", epochs)
    check_choice("space", space, SPACES)
    check_choice("evaluate", evaluate, EVALUATIONS)
    check_choice("training_method", training_method, TRAINING_METHODS)
    if tile_runs is not None:
        check_positive_int("tile_runs", tile_runs)
    options = EvalOptions(loss, reduction, batch_size, device, dtype, memory_budget, None, method, progress)
    stream.check_data("train", train)
    stream.check_reusable("train", train, epochs, "once per epoch")
    stream.check_data("test", test)
    check_steps(train, epochs, batch_size)
    keep = recorder(record)
    plane = default_plane(model) if plane is None else plane
    check_plane(model, plane)
    first = _Starts.read(model, plane, starts, grid, vectors, space)
    seeds = _seeds(seed, first.count, train)
    groups = group_runs(optimizer, first.count)
    per_epoch = steps_per_epoch(train, batch_size)
    _check_records(first.count, record_count(record, epochs, per_epoch))
    run = _Run(model, plane, first, options, space)
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(int(seeds[0]))  # random layers (dropout) draw from torch's generators
        tiles, records, method_used = run.train(groups, seeds, train, epochs, keep, training_method, tile_runs)
    positions, residual = records.arrays()
    losses = _test_losses(model, plane, test, positions, evaluate, options)
    return Trajectories(
        positions=positions,
        loss=losses,
        step=np.asarray(records.steps, dtype=np.int64),
        diverged_step=_gather(tiles, first.count, lambda tile: tile.stopped_at()),
        residual=residual,
        final_parameters=run.final_parameters(tiles) if space == "full" else None,
        group=_group_of_runs(groups, first.count),
        group_names=tuple(group.name for group in groups),
        grid_w1=first.grid[0] if first.grid else None,
        grid_w2=first.grid[1] if first.grid else None,
        labels=plane.labels,
        reduction=reduction,
        record=record if isinstance(record, str) else "steps",
        space=space,
        evaluated=evaluate,
        method=method_used,
        device=str(run.device),
        dtype=str(run.dtype).removeprefix("torch."),
        seconds=time.perf_counter() - started,
    )


def compare_optimizers(
    model: nn.Module, train: object, test: object, optimizers: Mapping[str, OptimizerFactory], **options: object
) -> dict[str, Trajectories]:
    """Several optimisers from the same starts on the same batches, in one ``train_many`` call.

    Args:
        optimizers: a name for each optimiser factory, e.g. ``{"SGD": lambda p:
            torch.optim.SGD(p, lr=1e-2), "Adam": lambda p: torch.optim.Adam(p, lr=1e-2)}``.
        **options: ``train_many``'s other keywords (``starts``, ``grid`` or ``vectors``,
            ``epochs``, ``plane``, ...); ``seed`` must be one number.

    Returns:
        Each name's runs, in the order of ``optimizers``; each ``Trajectories`` has one
        run per start, and keeps the start grid. Draw them together with
        ``plot_contour(surface, {name: runs.trajectory(k) for name, runs in ...})``.
    """
    if not isinstance(optimizers, Mapping) or not optimizers:
        raise FastsurfaceError(f"`optimizers` must map names to optimizer factories, got {optimizers!r}")
    if "optimizer" in options:
        raise FastsurfaceError("`optimizer` is set by `optimizers`; pass the factories there")
    if not isinstance(options.get("seed", 0), numbers.Integral):
        raise FastsurfaceError(f"`seed` must be one integer when comparing optimizers, got {options['seed']!r}")
    plane = options.get("plane")
    if plane is not None and not isinstance(plane, Plane):
        raise FastsurfaceError(f"`plane` must be a fastsurface Plane, got {type(plane).__name__}")
    starts = _Starts.read(
        model,
        default_plane(model) if plane is None else plane,
        options.pop("starts", None),  # type: ignore[arg-type]
        options.pop("grid", None),  # type: ignore[arg-type]
        options.pop("vectors", None),  # type: ignore[arg-type]
        str(options.get("space", "full")),
    )
    count = starts.count
    factories = [factory for factory in optimizers.values() for _ in range(count)]
    repeated = starts.repeated(len(optimizers))
    together = train_many(model, train, test, optimizer=factories, **repeated.keywords(), **options)  # type: ignore[arg-type]
    return {name: _block(together, index, count, starts.grid) for index, name in enumerate(optimizers)}


@dataclass(frozen=True)
class _Starts:
    """Where the runs start: plane coordinates ``(K, 2)`` or parameter vectors ``(K, D)``
    (float64, CPU), and the start grid's axes when they come from one."""

    coordinates: torch.Tensor | None
    vectors: torch.Tensor | None
    grid: tuple[np.ndarray, np.ndarray] | None

    @property
    def count(self) -> int:
        held = self.coordinates if self.coordinates is not None else self.vectors
        assert held is not None
        return len(held)

    @classmethod
    def read(
        cls,
        model: nn.Module,
        plane: Plane,
        starts: np.ndarray | torch.Tensor | None,
        grid: tuple[np.ndarray, np.ndarray] | None,
        vectors: np.ndarray | torch.Tensor | None,
        space: str,
    ) -> _Starts:
        given = [
            name for name, value in (("starts", starts), ("grid", grid), ("vectors", vectors)) if value is not None
        ]
        if len(given) != 1:
            raise FastsurfaceError(
                f"Precisely one of `starts`, `grid` and `vectors` must be given, got {given or 'none'}"
            )
        width = sum(p.numel() for p in model.parameters())
        trained = width if space == "full" else 2
        if grid is not None:
            if not isinstance(grid, (tuple, list)) or len(grid) != 2:
                raise FastsurfaceError(f"`grid` must be two axes (w1, w2), got {grid!r}")
            first, second = as_axis("grid[0]", grid[0]), as_axis("grid[1]", grid[1])
            _check_runs("grid", len(first) * len(second), trained)
            points = np.stack(np.meshgrid(first, second, indexing="ij"), axis=-1).reshape(-1, 2)
            return cls(torch.from_numpy(points), None, (first, second))
        if starts is not None:
            return cls(_finite_rows("starts", starts, 2, trained), None, None)
        if space != "full":
            raise FastsurfaceError("`vectors` start runs in the full parameter space; with space='plane' give `starts`")
        return cls(None, _finite_rows("vectors", vectors, width, trained), None)

    def repeated(self, times: int) -> _Starts:
        """These starts, ``times`` over (no grid: the runs are no longer one grid)."""

        def tile(values: torch.Tensor | None) -> torch.Tensor | None:
            return None if values is None else values.repeat(times, 1)

        return _Starts(tile(self.coordinates), tile(self.vectors), None)

    def keywords(self) -> dict[str, torch.Tensor]:
        """The ``train_many`` keyword that gives these starts."""
        if self.coordinates is not None:
            return {"starts": self.coordinates}
        assert self.vectors is not None
        return {"vectors": self.vectors}


def _finite_rows(name: str, values: object, width: int, trained: int) -> torch.Tensor:
    """``values`` as float64 rows of ``width`` numbers, one run each (``_check_runs``)."""
    rows = torch.from_numpy(real_values(name, values, f"numbers of shape (K, {width})"))
    if rows.ndim != 2 or rows.shape[1] != width or len(rows) == 0:
        raise FastsurfaceError(f"`{name}` must have shape (K, {width}) with K >= 1, got {tuple(rows.shape)}")
    if not bool(torch.isfinite(rows).all()):
        raise FastsurfaceError(f"`{name}` must be finite, got a non-finite value in row {_first_bad(rows)}")
    _check_runs(name, len(rows), trained)
    return rows


def _first_bad(rows: torch.Tensor) -> int:
    return int((~torch.isfinite(rows).all(dim=1)).nonzero()[0, 0])


def _seeds(seed: int | Sequence[int], count: int, train: object) -> np.ndarray:
    """One seed per run, checked; independent seeds need a pair (a loader makes its own batches)."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        check_seed("seed", seed)
        return np.full(count, int(seed), dtype=np.int64)
    if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, np.ndarray)) or len(seed) != count:
        raise FastsurfaceError(f"`seed` must be an integer or one integer per run ({count}), got {seed!r}")
    for value in seed:
        check_seed("seed", value)
    if len(set(map(int, seed))) > 1 and not stream.is_pair(train):
        raise FastsurfaceError("`seed`: one seed per run needs `train` as an (x, y) pair; a loader makes its batches")
    return np.asarray([int(value) for value in seed], dtype=np.int64)


def _check_runs(name: str, count: int, trained: int) -> None:
    """Refuse ``count`` runs, each training ``trained`` numbers, where they would not fit in
    the host's memory, before any is made."""
    check_host_fits(name, f"{count:,} runs need", count * (_RUN_BYTES + _TRAINED_BYTES * trained), "start fewer runs")


def _check_records(runs: int, records: int) -> None:
    needed = runs * records * _RECORD_BYTES
    check_host_fits(
        "record", f"{runs:,} runs x {records:,} records need", needed, "record fewer steps or start fewer runs"
    )


class _Records:
    """Positions and residuals of every run at each recorded step (float64, host)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.steps: list[int] = []
        self.positions: list[np.ndarray] = []
        self.residuals: list[np.ndarray] = []

    def add(self, step: int, tiles: list[StackedTile], basis: PlaneBasis | None) -> None:
        positions = np.full((self.count, 2), np.nan)
        residual = np.full(self.count, np.nan)
        for tile in tiles:
            vectors = tile.vectors()
            # Still running and finite; a run whose last step overflowed is stopped at the next check.
            finite = tile.finite() & torch.isfinite(vectors).all(dim=1).numpy()
            if basis is None:
                coordinates, off_plane = vectors, torch.zeros(len(tile.runs), dtype=torch.float64)
            else:  # the least squares refuse non-finite rows: those are not drawn anyway
                coordinates, off_plane, _ = basis.project(vectors.nan_to_num(0.0, 0.0, 0.0))
            positions[tile.runs] = np.where(finite[:, None], coordinates.numpy(), np.nan)
            residual[tile.runs] = np.where(finite, off_plane.numpy(), np.nan)
        self.steps.append(step)
        self.positions.append(positions)
        self.residuals.append(residual)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(K, T, 2)`` and residuals ``(K, T)``."""
        return np.stack(self.positions, axis=1), np.stack(self.residuals, axis=1)


class _Run:
    """One ``train_many`` call's training: the model copy, its layout and the tiles."""

    def __init__(self, model: nn.Module, plane: Plane, starts: _Starts, options: EvalOptions, space: str) -> None:
        self.device, self.dtype = options.compute_device, options.compute_dtype
        self.options = options
        self.starts = starts
        module = private_copy(model).to(device=self.device, dtype=self.dtype).train()
        replace_all_batch_norm_modules_(module)
        local = plane.to(self.device, self.dtype)
        parameters = {n: p.detach() for n, p in module.named_parameters()}
        buffers = {n: b.detach() for n, b in module.named_buffers()}
        state = {**parameters, **buffers} if space == "plane" else buffers
        self.layout = Layout(space, module, local, state)
        self.parameters = parameters
        self.basis = PlaneBasis.of(model, plane) if space == "full" else None

    def train(
        self,
        groups: list[OptimizerGroup],
        seeds: np.ndarray,
        train: object,
        epochs: int,
        keep: Callable[..., bool],
        training_method: str,
        tile_runs: int | None,
    ) -> tuple[list[StackedTile], _Records, str]:
        batches = _Batches(train, self.options.batch_size, seeds, self.device, self.dtype)
        records = _Records(self.starts.count)
        total = epochs * (batches.per_epoch or 1)
        method = self._method(training_method, total)
        tiles: list[StackedTile] = []
        taken = 0
        bar = tqdm(total=total, desc="training", unit="step", disable=not self.options.progress, leave=False)
        with bar:
            for _ in range(epochs):
                for x, y in batches.epoch():
                    if not tiles:  # the first batch: check the model on it, then size and fill the tiles
                        tiles = self._tiles(groups, x, y, batches.per_run, method, tile_runs)
                        if keep(0, epoch_end=False):
                            records.add(0, tiles, self.basis)
                    taken += 1
                    try:
                        _step(tiles, batches, x, y, taken)
                    except UntraceableModelError:  # raised by the first step's compilation, before any update
                        if training_method != "auto" or taken > 1:
                            raise
                        method = "vmap"
                        tiles = self._tiles(groups, x, y, batches.per_run, method, tile_runs)
                        _step(tiles, batches, x, y, taken)
                    if keep(taken, epoch_end=False):
                        records.add(taken, tiles, self.basis)
                    bar.update()
                if keep(taken, epoch_end=True) and (not records.steps or records.steps[-1] != taken):
                    records.add(taken, tiles, self.basis)
        for tile in tiles:
            tile.finish(taken)
        if not records.steps:
            raise FastsurfaceError(f"`record` keeps none of this training's steps (0 to {taken})")
        return tiles, records, method

    def _tiles(
        self,
        groups: list[OptimizerGroup],
        x: torch.Tensor,
        y: torch.Tensor,
        per_run: bool,
        method: str,
        tile_runs: int | None,
    ) -> list[StackedTile]:
        """The tiles of every group, once the model passed its check on a first batch."""
        x, y = (x[0], y[0]) if per_run else (x, y)
        check_prediction_shape(self.layout.module, self.layout.plane, self.options.objective, x, y)
        tile = tile_runs or self._tile_size(x[:PROBE_SAMPLES], max(len(g.runs) for g in groups), method)
        function = step_function(self.layout, self.options.objective, method, tile, per_run)
        return [
            StackedTile(runs, self._initial(runs, rows), group, function, self.layout)
            for group in groups
            for runs, rows in _tiles_of(group.runs, tile, pad=method == "compiled")
        ]

    def final_parameters(self, tiles: list[StackedTile]) -> np.ndarray:
        """Each run's parameter vector at the end, NaN rows for runs that diverged."""
        width = sum(p.numel() for p in self.parameters.values())
        result = np.full((self.starts.count, width), np.nan)
        for tile in tiles:
            result[tile.runs] = np.where(tile.finite()[:, None], tile.vectors().numpy(), np.nan)
        return result

    def _method(self, training_method: str, steps: int) -> str:
        if training_method != "auto":
            return training_method
        return auto_training_method(self.starts.count, steps, self.options.batch_size, self.device)

    def _tile_size(self, x: torch.Tensor, largest_group: int, method: str) -> int:
        """Runs per tile within the budget: a batch's activations (forward and backward;
        the fused compiled step keeps none, the forward's estimate stays as a bound) and
        the copies of the trainable tensors; tiles of a group split it evenly."""
        trainable = 2 if self.layout.space == "plane" else sum(p.numel() for p in self.parameters.values())
        passes = 1 if method == "compiled" else 2
        activations = passes * bytes_per_sample(self.layout.module, x) * self.options.batch_size
        per_run = activations + _STATE_COPIES * 8 * trainable
        largest = max(1, self.options.budget // per_run)
        return math.ceil(largest_group / math.ceil(largest_group / largest))

    def _initial(self, runs: np.ndarray, padded: int) -> TensorDict:
        """Stacked starting tensors of ``runs``, the last one repeated to ``padded`` rows:
        leaves that require gradients, as an optimiser's parameters do."""
        rows = torch.from_numpy(np.concatenate([runs, np.full(padded - len(runs), runs[-1])]))
        return {name: values.requires_grad_() for name, values in self._start_values(rows).items()}

    def _start_values(self, rows: torch.Tensor) -> TensorDict:
        device, dtype = self.device, self.dtype
        if self.starts.vectors is not None:
            names = tuple(self.parameters)
            shapes = [tuple(p.shape) for p in self.parameters.values()]
            split = torch.split(self.starts.vectors[rows], [math.prod(s) for s in shapes], dim=1)
            return {
                n: part.reshape(len(rows), *s).to(device, dtype)
                for n, part, s in zip(names, split, shapes, strict=True)
            }
        assert self.starts.coordinates is not None
        coordinates = self.starts.coordinates[rows].to(device, dtype)
        if self.layout.space == "plane":
            return {COORDINATES: coordinates}
        plane = self.layout.plane
        moving = {
            n: plane.origin[n] + _outer(coordinates[:, 0], plane.first[n]) + _outer(coordinates[:, 1], plane.second[n])
            for n in plane.origin
        }
        return {
            n: moving[n].clone() if n in moving else p.expand(len(rows), *p.shape).clone()
            for n, p in self.parameters.items()
        }


def auto_training_method(runs: int, steps: int, batch_size: int, device: torch.device) -> str:
    """The route ``training_method="auto"`` takes for ``runs`` runs of ``steps`` steps of
    ``batch_size`` samples on ``device``: ``"compiled"`` from ``COMPILE_THRESHOLD`` samples
    of work where the toolchain is present (compiling then pays even with a cold inductor
    cache), else ``"vmap"``."""
    return "compiled" if runs * steps * batch_size >= COMPILE_THRESHOLD and compile_available(device) else "vmap"


def _step(tiles: list[StackedTile], batches: _Batches, x: torch.Tensor, y: torch.Tensor, taken: int) -> None:
    """Step ``taken`` of every tile, each on its runs' batches."""
    for tile in tiles:
        tile.step(*batches.for_runs(x, y, tile), taken)


def _outer(values: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``values[k] * tensor`` for each ``k``, shape ``(len(values), *tensor.shape)``."""
    return values.reshape(-1, *([1] * tensor.ndim)) * tensor


def _tiles_of(runs: np.ndarray, tile: int, pad: bool) -> Iterator[tuple[np.ndarray, int]]:
    """``(runs of the tile, rows it holds)``: consecutive slices of ``tile`` runs; with
    ``pad``, every tile has ``tile`` rows (a compiled function's fixed shape)."""
    for start in range(0, len(runs), tile):
        part = runs[start : start + tile]
        yield part, (tile if pad else len(part))


class _Batches:
    """Each step's batches: one for every run, or one per seed (stacked) when the runs
    have their own seeds; each is ``training_batches``' batch for that seed."""

    def __init__(self, train: object, batch_size: int, seeds: np.ndarray, device: torch.device, dtype: torch.dtype):
        self.train, self.batch_size, self.device, self.dtype = train, batch_size, device, dtype
        distinct, self.seed_index = np.unique(seeds, return_inverse=True)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in distinct]
        self.per_run = len(distinct) > 1
        self.per_epoch = steps_per_epoch(train, batch_size)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's steps: ``(x, y)``, stacked over seeds ``(S, B, ...)`` with several."""
        streams = [training_batches(self.train, self.batch_size, g, self.device, self.dtype) for g in self.generators]
        if not self.per_run:
            yield from streams[0]
            return
        for batches in zip(*streams, strict=True):
            yield torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])

    def for_runs(self, x: torch.Tensor, y: torch.Tensor, tile: StackedTile) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of each of ``tile``'s rows (its padding repeats its last run's)."""
        if not self.per_run:
            return x, y
        rows = len(next(iter(tile.tensors.values())))
        index = self.seed_index[np.concatenate([tile.runs, np.full(rows - len(tile.runs), tile.runs[-1])])]
        chosen = torch.from_numpy(index).to(x.device)
        return x[chosen], y[chosen]


def _test_losses(
    model: nn.Module, plane: Plane, test: object, positions: np.ndarray, evaluate: str, options: EvalOptions
) -> np.ndarray:
    """The surface engine's loss at every finite position (``"final"``: the last records only)."""
    losses = np.full(positions.shape[:2], np.nan)
    wanted = np.isfinite(positions).all(axis=-1)
    if evaluate == "final":
        wanted[:, :-1] = False
    if wanted.any():
        losses[wanted] = point_losses(model, plane, test, positions[wanted], options).loss.cpu().numpy()
    return losses


def _gather(tiles: list[StackedTile], count: int, value: object) -> np.ndarray:
    result = np.full(count, -1, dtype=np.int64)
    for tile in tiles:
        result[tile.runs] = value(tile)  # type: ignore[operator]
    return result


def _group_of_runs(groups: list[OptimizerGroup], count: int) -> np.ndarray:
    group = np.zeros(count, dtype=np.int64)
    for index, members in enumerate(groups):
        group[members.runs] = index
    return group


def _block(together: Trajectories, index: int, count: int, grid: tuple[np.ndarray, np.ndarray] | None) -> Trajectories:
    """Runs ``index·count`` to ``(index + 1)·count - 1`` of ``together``, one optimiser's."""
    runs = slice(index * count, (index + 1) * count)
    parameters = together.final_parameters
    return replace(
        together,
        positions=together.positions[runs],
        loss=together.loss[runs],
        diverged_step=together.diverged_step[runs],
        residual=together.residual[runs],
        final_parameters=None if parameters is None else parameters[runs],
        group=np.zeros(count, dtype=np.int64),
        group_names=(together.group_names[int(together.group[runs][0])],),
        grid_w1=None if grid is None else grid[0],
        grid_w2=None if grid is None else grid[1],
    )
