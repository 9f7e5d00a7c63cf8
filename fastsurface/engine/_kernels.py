"""Brute-force kernels: per-point weighted loss sums for a tile of plane points.

A kernel maps coordinates ``a``, ``b`` of shape ``(T,)`` and a chunk (inputs ``x``
``(S, ...)``, targets ``y``, weights ``w`` ``(S,)``) to ``sum_s w_s * loss_s`` at each
point, shape ``(T,)`` (``(T, W)`` for combined losses, ``Loss.weighted_sum``), in the
compute dtype.

- ``vmap``: ``torch.func.functional_call`` under ``torch.func.vmap``; works for any
  module that vmap supports; every layer's output is materialised for the whole tile.
- ``compiled``: the same function traced once and compiled by inductor without dynamo
  (``_inductor.CompiledFunction``), which fuses forward, loss and weighted sum into one
  loop without large intermediates; on CPU its
  ``tanh`` is ``inductor.accurate_tanh`` (3 ulp, about 3× Sleef's speed). Compiled
  functions are cached by the model's structure, so a second surface of the same
  architecture (or the same model with new weights) does not recompile.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from collections.abc import Callable
from itertools import chain

import torch
from torch import nn
from torch.func import functional_call, vmap

from fastsurface._support.identity import architecture
from fastsurface.engine._inductor import CompiledFunction
from fastsurface.engine._losses import Loss
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Chunks are padded (with zero-weight copies of a sample) to a multiple of this many
# samples, so that chunks of nearby sizes share one compiled shape.
SAMPLE_GRANULE = 256


def vmap_kernel(module: nn.Module, plane: Plane, loss: Loss, randomness: str = "error") -> Kernel:
    """The vectorised kernel: one vmap over the tile's points; ``randomness`` as in
    ``torch.func.vmap`` (``"different"``: each point draws its own dropout masks)."""

    def point_sum(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        prediction = functional_call(module, plane.params(a, b), (x,))
        return loss.weighted_sum(prediction, y, w)

    return vmap(point_sum, in_dims=(0, 0, None, None, None), randomness=randomness)


def compile_available(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build kernels here: a C++ compiler on CPU, Triton on CUDA."""
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(compiler) for compiler in ("c++", "g++", "clang++"))


class CompiledKernel:
    """The fused kernel for tiles of exactly ``tile`` points (shorter tiles are padded).

    ``tile`` is ``max_tile``, or the power of two at or above ``points`` when that is
    smaller, so that grids of many sizes share a few compiled shapes. Parameters and
    buffers are passed to the compiled function as inputs, never baked in, so a cached
    function serves any weights of the same architecture.
    """

    def __init__(self, module: nn.Module, plane: Plane, loss: Loss, points: int, max_tile: int) -> None:
        if not compile_available(plane.device):
            raise FastsurfaceError(
                "`method` 'compiled' needs torch.compile's toolchain: a C++ compiler on CPU, Triton on CUDA"
            )
        self.tile = min(max_tile, 1 << (points - 1).bit_length())
        self.plane = plane
        self.state = {name: t.detach() for name, t in chain(module.named_parameters(), module.named_buffers())}
        self.function = _compiled(module, plane, loss)
        self._chunk: tuple[torch.Tensor, ...] = ()
        self._padded: tuple[torch.Tensor, ...] = ()

    def __call__(
        self, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        count = len(a)
        a, b = _pad_repeating(a, self.tile), _pad_repeating(b, self.tile)
        x, y, w = self._padded_chunk(x, y, w)
        plane = self.plane
        return self.function(a, b, x, y, w, self.state, plane.origin, plane.first, plane.second)[:count]

    def _padded_chunk(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The chunk padded to a multiple of ``SAMPLE_GRANULE``; padding weighs 0."""
        if len(self._chunk) == 0 or any(new is not old for new, old in zip((x, y, w), self._chunk, strict=True)):
            size = math.ceil(len(x) / SAMPLE_GRANULE) * SAMPLE_GRANULE
            self._chunk = (x, y, w)
            self._padded = (_pad_repeating(x, size), _pad_repeating(y, size), _pad_zeros(w, size))
        return self._padded


def _pad_repeating(values: torch.Tensor, size: int) -> torch.Tensor:
    missing = size - len(values)
    return values if missing == 0 else torch.cat([values, values[:1].expand(missing, *values.shape[1:])])


def _pad_zeros(values: torch.Tensor, size: int) -> torch.Tensor:
    missing = size - len(values)
    return values if missing == 0 else torch.cat([values, values.new_zeros(missing)])


def _compiled(module: nn.Module, plane: Plane, loss: Loss) -> CompiledFunction:
    key = (
        architecture(module),  # what the compiled forward depends on besides tensor values
        tuple(plane.origin),
        loss.per_sample,
        torch.get_num_threads(),  # inductor builds its CPU loops for the thread count of the moment
    )

    def point_sum(
        a: torch.Tensor,
        b: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        state: dict[str, torch.Tensor],
        origin: dict[str, torch.Tensor],
        first: dict[str, torch.Tensor],
        second: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        moving = {name: origin[name] + a * first[name] + b * second[name] for name in origin}
        prediction = functional_call(module, {**state, **moving}, (x,))
        return loss.weighted_sum(prediction, y, w)

    return CompiledFunction(vmap(point_sum, in_dims=(0, 0, None, None, None, None, None, None, None)), key)
