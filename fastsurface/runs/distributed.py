"""One surface across many processes and machines: ``torch.distributed`` under ``torchrun``.

The same call works with and without ``torchrun``: outside it (or with one process) it
runs alone; under it each process (rank) takes a share and every rank gets the result.
Two ways to share the work:

- **grid sharding**: the grid is cut into blocks of rows (``checkpoint.plan_blocks``,
  the same plan whatever the number of ranks) and rank ``r`` of ``W`` takes blocks
  ``r, r + W, r + 2W, ...``. Static round-robin, not work stealing: every block has the
  same points and data, so the shares differ by at most one block, no coordination is
  needed, and a restarted rank finds exactly its own finished blocks again. Each rank
  writes its rows into a zero grid and a SUM all-reduce assembles it; every entry has one
  non-zero contributor, so the result is the single-process one bit for bit.
- **data sharding** (small grids over large data): each rank takes a contiguous run of
  whole batches of an ``(x, y)`` pair (every ``W``-th batch of an iterable) and evaluates
  the whole grid on it; the per-point weighted sums (``loss × divisor``) and the divisors
  are all-reduced. Equal to the single-process surface to float64 rounding (the sums are
  added in another order).

``shard="auto"`` takes grid sharding when every rank gets at least two blocks, else data
sharding. The backend is ``nccl`` on CUDA and ``gloo`` on CPU; under ``torchrun`` a rank
on CUDA uses ``cuda:LOCAL_RANK``. The first call joins the process group (unless the script
did), and later calls share it. With ``checkpoint_dir`` each rank saves its finished
blocks as separate files (atomic renames, no shared file, no locks); a job restarted
after a rank died reuses them.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fastsurface._support.choices import SHARDS
from fastsurface._support.devices import resolve_device
from fastsurface.engine import _stream as stream
from fastsurface.engine.evaluate import checked_grid, grid_surface
from fastsurface.engine.options import EvalOptions, surface_keywords
from fastsurface.errors import FastsurfaceError, check_bool, check_choice, check_positive_int
from fastsurface.planes.plane import Plane
from fastsurface.results import Surface
from fastsurface.runs.checkpoint import Block, Checkpoint, default_block_rows, plan_blocks, remembered


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size``, ``local_rank`` on its machine."""

    rank: int
    size: int
    local_rank: int


@dataclass(frozen=True)
class ShardedSurface:
    """A surface computed by ``sharded_loss_surface`` and how the work was shared.

    Attributes:
        surface: the whole surface (on every rank); ``seconds`` is the wall-clock time of
            the whole call, its loss is on the collective device.
        shard: ``"grid"`` or ``"data"``.
        ranks: number of processes.
        blocks: grid blocks of the run (1 for data sharding).
        computed: blocks evaluated by this call, over all ranks (the rest were reused
            from ``checkpoint_dir``).
    """

    surface: Surface
    shard: str
    ranks: int
    blocks: int
    computed: int


def current_world() -> World:
    """The job this process belongs to: an initialised process group, else ``torchrun``'s
    environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else a job of one."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), local_rank)
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), local_rank)


def sharded_loss_surface(
    model: nn.Module,
    data: object,
    w1: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    w2: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    *,
    shard: str = "auto",
    block_rows: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    key: str | None = None,
    keep: bool = False,
    **options: Any,
) -> ShardedSurface:
    """``loss_surface`` in blocks of rows, shared among the ranks of a ``torchrun`` job.

    Args:
        model, data, w1, w2: as in ``loss_surface``.
        shard: ``"grid"``, ``"data"`` or ``"auto"`` (see the module's description).
        block_rows: grid rows per block; by default about 65,536 points per block. The
            block plan decides the numbers, not the number of ranks.
        checkpoint_dir, key, keep: save finished blocks there and reuse them on a
            restart (as ``resumable_loss_surface``); grid sharding only.
        options: keyword arguments of ``loss_surface``; ``device`` ``"auto"``/``"cuda"``
            means ``cuda:LOCAL_RANK`` under ``torchrun``.

    Returns:
        A ``ShardedSurface``; every rank gets the same surface.

    >>> import fastsurface as fs
    >>> run = sharded_loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), fs.axis(0, 1, 0.25), block_rows=2)
    >>> run.shard, run.ranks, run.blocks, run.surface.loss.shape
    ('grid', 1, 2, (4, 80))
    """
    check_choice("shard", shard, SHARDS)
    check_bool("keep", keep)
    plane, evaluation = surface_keywords(options)
    first, second = checked_grid(w1, w2, evaluation)
    rows = default_block_rows(len(second)) if block_rows is None else block_rows
    check_positive_int("block_rows", rows)
    blocks = plan_blocks(len(first), rows)
    world = current_world()
    evaluation = evaluation.replace(device=_rank_device(evaluation.device, world))
    chosen = _choose_shard(shard, blocks, data, evaluation.batch_size, world)
    if chosen == "grid":
        stream.check_reusable("data", data, len(blocks), "once per block")
    if chosen == "data" and checkpoint_dir is not None:
        raise FastsurfaceError("`checkpoint_dir` keeps finished grid blocks; data sharding has none, use shard='grid'")
    started = time.perf_counter()
    with _process_group(world, evaluation.compute_device):
        if chosen == "grid":
            surface, computed = _grid_shard(
                model, data, first, second, blocks, world, checkpoint_dir, key, keep, plane, evaluation
            )
        else:
            surface, computed = _data_shard(model, data, first, second, world, plane, evaluation), 1
    surface = _with_seconds(remembered(surface, model, data, plane, evaluation), time.perf_counter() - started)
    return ShardedSurface(surface, chosen, world.size, len(blocks) if chosen == "grid" else 1, computed)


def _rank_device(device: str | torch.device, world: World) -> torch.device:
    if world.size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return resolve_device(f"cuda:{world.local_rank % torch.cuda.device_count()}")
    return resolve_device(device)


def _choose_shard(shard: str, blocks: tuple[Block, ...], data: object, batch_size: int, world: World) -> str:
    if shard != "auto":
        return shard
    if world.size == 1 or len(blocks) >= 2 * world.size:
        return "grid"
    return "data" if not stream.is_pair(data) or _batch_count(data, batch_size) >= world.size else "grid"


@contextmanager
def _process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the job's process group on the first call, for the rest of the process (left at
    exit). Leaving it after each call broke the next one: torch names a re-made default
    group as it named the first, so its ranks met the first's stale addresses in
    torchrun's store (gloo: "connectFullMesh failed", or a hang)."""
    if world.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_process_group)
    yield


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _grid_shard(
    model: nn.Module,
    data: object,
    first: np.ndarray,
    second: np.ndarray,
    blocks: tuple[Block, ...],
    world: World,
    checkpoint_dir: str | os.PathLike[str] | None,
    key: str | None,
    keep: bool,
    plane: Plane | None,
    options: EvalOptions,
) -> tuple[Surface, int]:
    mine = blocks[world.rank :: world.size]
    parts: dict[Block, Surface] = {}
    failure: Exception | None = None
    computed = 0
    try:
        if checkpoint_dir is None:
            parts = {b: grid_surface(model, data, first[b.start : b.stop], second, plane, options) for b in mine}
            computed = len(mine)
        else:
            run = Checkpoint.with_options(
                checkpoint_dir, model, data, first, second, blocks[0].stop, key, plane, options
            )
            computed = run.compute(mine)
            parts = {b: _computed_block(run, b) for b in mine}
    except Exception as error:  # every rank must learn of it, or the others wait in a collective forever
        failure = error
    device = options.compute_device
    _agree(failure, world, device)
    grid = torch.zeros(len(first), len(second), dtype=torch.float64, device=device)
    for block, part in parts.items():
        grid[block.start : block.stop] = part.loss_tensor.to(device)
    counts = torch.tensor([computed], device=device)
    if world.size > 1:
        dist.all_reduce(grid)
        dist.all_reduce(counts)
        dist.barrier()  # every rank has read its blocks before any folder goes
    if checkpoint_dir is not None and not keep:
        run.remove()
    template = _from_rank_zero(parts.get(blocks[0]), world)
    return _surface_like(template, first, second, grid), int(counts.item())


def _data_shard(
    model: nn.Module,
    data: object,
    first: np.ndarray,
    second: np.ndarray,
    world: World,
    plane: Plane | None,
    options: EvalOptions,
) -> Surface:
    part: Surface | None = None
    failure: Exception | None = None
    try:
        share = _data_share(data, options.batch_size, world)
        part = grid_surface(model, share, first, second, plane, options)
    except Exception as error:  # every rank must learn of it, or the others wait in a collective forever
        failure = error
    device = options.compute_device
    _agree(failure, world, device)
    assert part is not None, "loss_surface returned, or _agree raised its error"
    divisor = part.samples if part.reduction == "mean" else part.batches
    sums = part.loss_tensor.to(device) * divisor
    counts = torch.tensor([part.samples, part.batches], dtype=torch.float64, device=device)
    if world.size > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    samples, batches = (int(c) for c in counts.tolist())
    template = Surface(**{**_fields(part), "samples": samples, "batches": batches})
    return _surface_like(template, first, second, sums / (samples if part.reduction == "mean" else batches))


def _data_share(data: object, batch_size: int, world: World) -> object:
    """This rank's whole batches: a contiguous run of a pair, or every ``W``-th batch of an iterable."""
    if not stream.is_pair(data):
        return (batch for number, batch in enumerate(stream.iterate(data)) if number % world.size == world.rank)
    count = _batch_count(data, batch_size)
    if count < world.size:
        raise FastsurfaceError(
            f"`shard` 'data' needs at least one batch per rank: {count} batch(es) of `batch_size` {batch_size} "
            f"for {world.size} ranks"
        )
    first_batch, last_batch = count * world.rank // world.size, count * (world.rank + 1) // world.size
    x, y = data
    start, stop = first_batch * batch_size, min(len(x), last_batch * batch_size)  # whole batches: exact weights
    return x[start:stop], y[start:stop]


def _batch_count(data: stream.Pair, batch_size: int) -> int:
    return -(-len(data[0]) // batch_size)


def _computed_block(run: Checkpoint, block: Block) -> Surface:
    """A block that ``run.compute`` has just finished, read back."""
    part = run.load_block(block)
    if part is None:
        raise RuntimeError(f"block {block.index} is missing right after it was computed")
    return part


def _agree(failure: BaseException | None, world: World, device: torch.device) -> None:
    """Raise on every rank if any rank failed (collectives would otherwise wait forever)."""
    if world.size > 1:
        failed = torch.tensor([0 if failure is None else 1], device=device)
        dist.all_reduce(failed)
        if failure is None and int(failed.item()):
            raise FastsurfaceError(f"{int(failed.item())} of {world.size} ranks failed; their output says why")
    if failure is not None:
        raise failure


def _from_rank_zero(part: Surface | None, world: World) -> Surface:
    """Rank 0's first block (every rank's metadata template), without its values."""
    shared: list[Surface | None] = [None]
    if world.size == 1 or world.rank == 0:
        if part is None:
            raise RuntimeError("rank 0 lacks the first block, which it computes or loads itself")
        if world.size == 1:
            return part
        # Without the plane (tensors on this rank's device) and the loss (perhaps a lambda, which
        # cannot be pickled): every rank adds its own (`remembered`).
        shared[0] = Surface(**{**_fields(part), "loss_tensor": torch.empty(0), "plane": None, "loss_function": None})
    dist.broadcast_object_list(shared, src=0)
    template = shared[0]
    if template is None:
        raise RuntimeError("rank 0 broadcast no first block")
    return template


def _fields(surface: Surface) -> dict[str, Any]:
    return {name: getattr(surface, name) for name in Surface.__dataclass_fields__}


def _surface_like(template: Surface, first: np.ndarray, second: np.ndarray, loss: torch.Tensor) -> Surface:
    return Surface(**{**_fields(template), "w1": first, "w2": second, "loss_tensor": loss})


def _with_seconds(surface: Surface, seconds: float) -> Surface:
    return Surface(**{**_fields(surface), "seconds": seconds})
