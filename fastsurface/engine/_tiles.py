"""Tiles: the sets of plane points a kernel evaluates, and how many fit in memory."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Hashable, Iterator

import numpy as np
import torch
from torch import nn

from fastsurface._support.memory import format_bytes, usable_bytes
from fastsurface.engine._stream import PROBE_SAMPLES
from fastsurface.engine.options import DEFAULT_BUDGET
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane

# Intermediates per activation element in one unfused forward + loss (inputs,
# activations, residuals, their squares); measured peaks stay below this.
_WORKSPACE_FACTOR = 4
# Samples per chunk are capped so that a tile still spans this many points; an explicit
# `tile_points` above it scales the working memory the memory guard plans for.
MIN_TILE_POINTS = 256
# Bytes per grid point beyond the tiles: the float64 sums and the float64 result of the reduction.
_BYTES_PER_POINT = 16


class GridPoints:
    """The points of ``first × second`` in row-major order (``index = i * len(second) + j``),
    made tile by tile so the full coordinate list never exists in memory."""

    def __init__(self, first: np.ndarray, second: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
        self.first = torch.as_tensor(first).to(device=device, dtype=dtype)
        self.second = torch.as_tensor(second).to(device=device, dtype=dtype)
        self.count = len(first) * len(second)
        self.device = device

    def tile(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates ``(w1, w2)`` of points ``start .. stop - 1``, each of shape ``(stop - start,)``."""
        index = torch.arange(start, stop, device=self.first.device)
        columns = len(self.second)
        return self.first[index // columns], self.second[index % columns]


class ListedPoints:
    """Explicit points, given as coordinates of shape ``(P, 2)``."""

    def __init__(self, points: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
        self.points = points.to(device=device, dtype=dtype)
        self.count = len(points)
        self.device = device

    def tile(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.points[start:stop, 0], self.points[start:stop, 1]


Points = GridPoints | ListedPoints


# Tile sizes (points) timed on the CPU before the budget's own; the budget caps them.
CANDIDATE_TILES = (8, 16, 32, 64, 128)
# The most samples a chunk of the batched shared route holds (see `TileSizer`).
BATCHED_CHUNK_SAMPLES = 2048
# Rounds of timing, each over every size in turn: a size is judged by its fastest call,
# and interleaving spreads the machine's slow moments (and each size's first call, which
# also pays for fresh allocations) over all sizes.
_TIMING_ROUNDS = 3
# The size chosen per model structure, kernel, dtype and chunk size, for this process.
_chosen: dict[Hashable, int] = {}


class TileChoice:
    """Points per tile: ``most`` (the memory budget's size), or, with a ``key``, the size
    with the least time per point among ``CANDIDATE_TILES`` and ``most``, timed on real
    tiles of the first chunk (``_TIMING_ROUNDS`` rounds over the sizes, each size judged by
    its fastest call) and then remembered per ``key`` for the process.

    Where a tile's working set no longer fits in the CPU's caches, time per point grows
    with the tile; where it is small, per-call overheads dominate: no rule knows where
    between the two a model lands. The sums are per point, so the choice changes results
    only by rounding. ``next()`` is the size of the next tile; ``took(points, seconds)``
    records its time.
    """

    def __init__(self, most: int, key: Hashable | None = None) -> None:
        self.key = key
        known = _chosen.get(key) if key is not None else None
        self.tile = known or most
        sizes = [size for size in CANDIDATE_TILES if size < most] + [most]
        self.trying = [] if key is None or known else sizes * _TIMING_ROUNDS
        self.per_point: dict[int, float] = {}

    @property
    def timing(self) -> bool:
        """Whether candidate sizes are still being timed (tile sizes vary until then)."""
        return bool(self.trying)

    def next(self) -> int:
        return self.trying[0] if self.trying else self.tile

    def took(self, points: int, seconds: float) -> None:
        if not self.trying:
            return
        size = self.trying.pop(0)
        if points == size:  # a short last tile is no measure of its size
            self.per_point[size] = min(self.per_point.get(size, math.inf), seconds / points)
        if not self.trying and self.per_point:
            self.tile = min(self.per_point, key=self.per_point.__getitem__)
            _chosen[self.key] = self.tile


class TileSizer:
    """Chunk and tile sizes that keep one kernel call within a memory budget (bytes).

    Chunks are planned for tiles of ``planned_points`` points and hold at most
    ``longest_chunk`` samples: ``MIN_TILE_POINTS`` and no cap by default. The batched
    shared route plans for ``CANDIDATE_TILES[0]`` points and at most ``BATCHED_CHUNK_SAMPLES``
    samples: its per-point products run at their rate only on long rows of samples, its
    elementwise passes stay in cache only on small tiles, and beyond a couple of thousand
    samples a longer chunk only forces smaller tiles onto larger tensors (measured on an
    8 → 32 → 32 → 1 MLP, 41 × 41 points: with 2,000 samples, one chunk as fast as chunks of
    474 with larger tiles, and an 8 → 128 → 128 → 1 MLP 2.0 s against 2.8 s; with 20,000
    samples, chunks of 16,000 and tiles of 7 points took 4.2–4.7 s, chunks of about 2,000
    2.0–2.5 s)."""

    def __init__(
        self,
        module: nn.Module,
        plane: Plane,
        budget: int,
        planned_points: int = MIN_TILE_POINTS,
        longest_chunk: int | None = None,
    ) -> None:
        self.module = module
        self.budget = budget
        self.planned_points = planned_points
        self.longest_chunk = longest_chunk
        self.plane_bytes = 2 * sum(t.numel() * t.element_size() for t in plane.origin.values())
        self.sample_bytes = 0

    def chunk_samples(self, x: torch.Tensor) -> int:
        """Samples per chunk, measured on example inputs ``x``: few enough that a tile
        still spans ``planned_points`` points, and at most ``longest_chunk``."""
        self.sample_bytes = bytes_per_sample(self.module, x[:PROBE_SAMPLES])
        samples = max(1, self.budget // (self.planned_points * self.sample_bytes))
        return samples if self.longest_chunk is None else min(samples, self.longest_chunk)

    def tile_points(self, samples: int) -> int:
        """Points per tile for a chunk of ``samples`` samples."""
        per_point = samples * self.sample_bytes + self.plane_bytes
        if per_point > self.budget:
            raise FastsurfaceError(
                f"`memory_budget` of {self.budget} bytes is below what one point needs on a chunk of "
                f"{samples} samples ({per_point} bytes); raise it"
            )
        return int(self.budget // per_point)


def bytes_per_sample(module: nn.Module, x: torch.Tensor) -> int:
    """Working bytes one sample needs at one point (``forward_bytes`` over the example
    inputs ``x``, per sample). The first forward pass of a surface: a model that fails on
    ``x`` raises a ``FastsurfaceError`` that says so."""
    with model_errors(x):
        return max(1, forward_bytes(module, x) // len(x))


@contextlib.contextmanager
def model_errors(x: torch.Tensor) -> Iterator[None]:
    """Re-raise an error of running the model on inputs ``x`` as a ``FastsurfaceError``
    naming `model` and `data` (with a hint for integer inputs)."""
    try:
        yield
    except FastsurfaceError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        hint = (
            "; integer inputs are passed as they are (indices for embedding layers): convert them to floating "
            "point for a model that expects numbers"
            if not (x.dtype.is_floating_point or x.dtype.is_complex)
            else ""
        )
        if len(x) == 1:  # e.g. BatchNorm in train mode, which needs two samples
            hint += "; this batch holds one sample (with `batch_size`, the last batch of a pair may)"
        raise FastsurfaceError(
            f"`model` fails on the inputs in `data` (shape {tuple(x.shape)[1:]} per sample, {x.dtype}){hint}: {error}"
        ) from error


def forward_bytes(module: nn.Module, inputs: object) -> int:
    """Working bytes of one forward pass over ``inputs`` (a tensor or any object a
    model's ``forward`` takes): the input tensor and every module's output, times a
    workspace factor, counted on a forward pass."""
    sizes = [inputs.numel() * inputs.element_size()] if isinstance(inputs, torch.Tensor) else []

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(count) for m in module.modules()]
    try:
        with torch.no_grad():
            module(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return _WORKSPACE_FACTOR * sum(sizes)


def whole_batch_tile_points(module: nn.Module, inputs: object, device: torch.device) -> int:
    """Points per tile when every point sees all of ``inputs`` at once (a loss over the
    whole batch, as the loss-landscapes drop-in computes): the default budget over one
    point's working bytes. Tensor inputs are measured on a few samples, as the engine
    measures them; other inputs take one forward pass over all of them."""
    if isinstance(inputs, torch.Tensor):
        point_bytes = bytes_per_sample(module, inputs[:PROBE_SAMPLES]) * len(inputs)
    else:
        point_bytes = forward_bytes(module, inputs)
    return max(1, DEFAULT_BUDGET[device.type] // point_bytes)


def working_bytes(memory_budget: int, tile_points: int | None) -> int:
    """Bytes one tile may use: the budget, scaled up by an explicit ``tile_points`` above
    the tile size the budget is planned for."""
    return memory_budget * max(1, math.ceil((tile_points or 0) / MIN_TILE_POINTS))


def check_fits(
    shape: tuple[int, int],
    device: torch.device,
    memory_budget: int,
    tile_points: int | None,
    *,
    name: str = "`w1` x `w2`",
    bytes_per_point: int = _BYTES_PER_POINT,
) -> None:
    """Raise ``FastsurfaceError`` when a surface of ``shape`` points cannot fit on ``device``.

    Args:
        shape: grid size ``(len(w1), len(w2))``.
        device: the compute device.
        memory_budget: the run's tile budget in bytes.
        tile_points: the caller's explicit tile size, if any.
        name: the arguments that decide the grid's size, for the message.
        bytes_per_point: what the caller keeps per grid point besides the tiles.

    >>> check_fits((80, 80), torch.device("cpu"), 256 * 2**20, None)
    >>> check_fits((10**6, 10**6), torch.device("cpu"), 256 * 2**20, None)
    Traceback (most recent call last):
    ...
    fastsurface.errors.FastsurfaceError: `w1` x `w2`: a 1000000 x 1000000 grid needs ...
    """
    limits = usable_bytes(device)
    if limits is None:
        return
    usable, available = limits
    output = bytes_per_point * shape[0] * shape[1]
    working = working_bytes(memory_budget, tile_points)
    if memory_budget > usable:
        raise FastsurfaceError(
            f"`memory_budget` of {memory_budget} bytes ({format_bytes(memory_budget)}) exceeds the "
            f"{format_bytes(usable)} this run may use on {device} ({format_bytes(available)} available); lower it"
        )
    if working > usable:
        raise FastsurfaceError(
            f"`tile_points` of {tile_points} would need about {format_bytes(working)} of working memory with a "
            f"`memory_budget` of {format_bytes(memory_budget)}, more than the {format_bytes(usable)} this run may "
            f"use on {device}; leave it unset or lower it"
        )
    if output + working > usable:
        raise FastsurfaceError(
            f"{name}: a {shape[0]} x {shape[1]} grid needs about {format_bytes(output)} for its losses plus "
            f"{format_bytes(working)} of tile working memory, more than the {format_bytes(usable)} this run may use on "
            f"{device} ({format_bytes(available)} available); use fewer grid points"
        )
