"""Stacked runs: training runs of one model held as tensors of shape ``(R, ...)`` and
advanced one optimiser step at a time, all together.

A tile of ``R`` runs holds its trainable tensors stacked along a new first dimension:
every parameter of the model (space ``"full"``), or the two plane coordinates as one
``(R, 2)`` tensor (space ``"plane"``). A step computes each run's batch-mean loss and its
gradient with ``torch.func.grad_and_value`` under ``torch.func.vmap`` over the runs (the
``functional_call`` that ``record_path`` and ``train_sgd`` differentiate), sets the
stacked gradients and calls the group's torch optimiser, which updates every run at once.
Nothing mixes runs: each run's loss is reduced over its own batch, and the optimisers
accepted (``_optimisers.ELEMENTWISE``) update each entry from its own gradient and state.

Routes (``training_method``): ``"vmap"`` runs that gradient function eagerly, with
torch's kernels; ``"compiled"`` runs it through ``torch.compile`` (inductor), which fuses
forward, loss and backward of a tile into one loop over runs and samples without
intermediates. On CPU the compiled float32 ``tanh`` is ``engine._inductor``'s, within
4e-7 of torch's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fastsurface._support.identity import architecture
from fastsurface.analysis._optimisers import OptimizerGroup, build
from fastsurface.engine._inductor import backend
from fastsurface.engine._kernels import compile_available
from fastsurface.engine._losses import Loss
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane, TensorDict

StepFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]
COORDINATES = "coordinates"
# Compiled step functions kept per process (architecture x tile size x layout).
_CACHE_SIZE = 8
# Dynamo counts recompiles per code object, and every vmap'd function shares functorch's.
_RECOMPILE_LIMIT = 64
_Compiled = Callable[..., tuple[TensorDict, tuple[torch.Tensor, torch.Tensor]]]
_compiled_cache: OrderedDict[Hashable, _Compiled] = OrderedDict()


@dataclass(frozen=True)
class Layout:
    """What a step differentiates and what it holds fixed.

    Attributes:
        space: ``"full"`` (every parameter trains) or ``"plane"`` (the coordinates train).
        module: the training copy of the model (train mode; batch norm normalises with
            batch statistics and keeps no running ones).
        plane: the plane on the compute device, in the compute dtype.
        state: the tensors that do not train: the buffers, and in plane space every
            parameter (the plane's moving ones are replaced at each step).
    """

    space: str
    module: nn.Module
    plane: Plane
    state: TensorDict

    @property
    def plane_parts(self) -> tuple[TensorDict, TensorDict, TensorDict]:
        """The plane's origin and directions where a step reads them (space ``"plane"``);
        empty otherwise, so that a compiled step does not guard on unused inputs."""
        if self.space != "plane":
            return {}, {}, {}
        return self.plane.origin, self.plane.first, self.plane.second


def step_function(layout: Layout, loss: Loss, method: str, tile: int, per_run_batches: bool) -> StepFunction:
    """``f(trainable, x, y, state, origin, first, second) -> (losses, finite)`` for a tile:
    sets the ``.grad`` of each stacked tensor of ``trainable`` (``(tile, ...)`` leaves) to
    every run's gradient and returns every run's batch-mean loss ``(tile,)`` and whether
    its parameters (those the step started from) are all finite, bool ``(tile,)``; ``x``,
    ``y`` are one batch for all runs, or one per run stacked along a first dimension when
    ``per_run_batches``."""
    module, space = layout.module, layout.space

    def run_loss(
        trainable: TensorDict,
        x: torch.Tensor,
        y: torch.Tensor,
        state: TensorDict,
        origin: TensorDict,
        first: TensorDict,
        second: TensorDict,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if space == "plane":
            coordinates = trainable[COORDINATES]
            moving = Plane(origin, first, second).params(coordinates[0], coordinates[1])
        else:
            moving = trainable
        prediction = functional_call(module, {**state, **moving}, (x,))
        finite = torch.stack([torch.isfinite(t).all() for t in trainable.values()]).all()
        return loss.per_sample(prediction, y).mean(), finite

    data_dim = 0 if per_run_batches else None
    in_dims = (0, data_dim, data_dim, None, None, None, None)
    if method == "vmap":
        # A vmapped forward differentiated by autograd: a fraction of vmap(grad)'s
        # per-call overhead; the sum's gradient is each run's own (d sum / d loss_k = 1).
        losses_of = vmap(run_loss, in_dims=in_dims, randomness="different")

        def eager(trainable: TensorDict, *rest: Any) -> tuple[torch.Tensor, torch.Tensor]:
            for tensor in trainable.values():
                tensor.grad = None
            losses, finite = losses_of(trainable, *rest)
            losses.sum().backward()
            return losses.detach(), finite

        return eager
    compiled = _compiled(
        vmap(grad_and_value(run_loss, has_aux=True), in_dims=in_dims, randomness="different"),
        layout,
        loss,
        tile,
        per_run_batches,
    )
    calls = 0

    def fused(trainable: TensorDict, *rest: Any) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        detached = {name: tensor.detach() for name, tensor in trainable.items()}  # no autograd graph to compile
        if calls == 0:  # the call that compiles: dynamo's default limit is shared by every vmap'd function
            with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT):
                gradients, (losses, finite) = compiled(detached, *rest)
        else:
            gradients, (losses, finite) = compiled(detached, *rest)
        calls += 1
        for name, tensor in trainable.items():
            tensor.grad = gradients[name]
        return losses, finite

    return fused


def _compiled(function: _Compiled, layout: Layout, loss: Loss, tile: int, per_run: bool) -> _Compiled:
    """``function`` through ``torch.compile``, cached by what it depends on besides tensor values."""
    device = layout.plane.device
    if not compile_available(device):
        raise FastsurfaceError(
            "`training_method` 'compiled' needs torch.compile's toolchain: a C++ compiler on CPU, Triton on CUDA"
        )
    key = (
        architecture(layout.module),
        layout.space,
        tile,
        per_run,
        tuple((n, t.shape, t.dtype, t.device) for n, t in layout.state.items()),
        tuple(layout.plane.origin),
        loss.per_sample,
        torch.get_num_threads(),  # inductor builds its CPU loops for the thread count of the moment
    )
    if key not in _compiled_cache:
        _compiled_cache[key] = torch.compile(function, dynamic=False, backend=backend(device))
        if len(_compiled_cache) > _CACHE_SIZE:
            _compiled_cache.popitem(last=False)
    _compiled_cache.move_to_end(key)
    return _compiled_cache[key]


class StackedTile:
    """``R`` runs of one optimiser group, trained together; the last ``padding`` of them
    are copies that only fill a compiled tile's fixed size.

    Attributes:
        runs: the indices (among all runs) of the tile's real runs, shape ``(R - padding,)``.
        tensors: the stacked trainable tensors, by name, each ``(R, ...)``: leaves that
            require gradients, as an optimiser's parameters do.
        alive: whether each run is still finite, bool ``(R,)``.
        diverged_step: the step at which each run's loss or parameters stopped being
            finite, ``-1`` while they are, int64 ``(R,)``.
    """

    def __init__(
        self, runs: np.ndarray, tensors: TensorDict, group: OptimizerGroup, function: StepFunction, layout: Layout
    ) -> None:
        self.runs = runs
        self.tensors = tensors
        self.optimizer = build(group, list(tensors.values()))
        self.function = function
        self.layout = layout
        size = len(next(iter(tensors.values())))
        device = layout.plane.device
        self.alive = torch.ones(size, dtype=torch.bool, device=device)
        self.diverged_step = torch.full((size,), -1, dtype=torch.int64, device=device)

    def step(self, x: torch.Tensor, y: torch.Tensor, taken: int) -> None:
        """Optimiser step ``taken`` (from 1) of every run on its batch. A run stops at the
        first step whose batch loss is not finite, or after the step whose update left
        its parameters non-finite (found as the next step starts, or by ``finish``): its
        later records are NaN, and its entries, updated elementwise, never reach another
        run's."""
        losses, entering_finite = self.function(self.tensors, x, y, self.layout.state, *self.layout.plane_parts)
        self.optimizer.step()
        self._stop(entering_finite, taken - 1)
        self._stop(torch.isfinite(losses), taken)

    def finish(self, taken: int) -> None:
        """Stop the runs whose last step (``taken``) left their parameters non-finite."""
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(t).reshape(len(t), -1).all(dim=1) for t in self.tensors.values()])
        self._stop(finite.all(dim=0), taken)

    def _stop(self, finite: torch.Tensor, step: int) -> None:
        self.diverged_step = torch.where(self.alive & ~finite, step, self.diverged_step)
        self.alive &= finite

    def vectors(self) -> torch.Tensor:
        """The real runs' trainable tensors flattened and concatenated in name order,
        float64 on the CPU, shape ``(R - padding, D)``."""
        count = len(self.runs)
        flat = [t.detach()[:count].reshape(count, -1) for t in self.tensors.values()]
        return torch.cat(flat, dim=1).to("cpu", torch.float64)

    def finite(self) -> np.ndarray:
        """Whether each real run is still finite, bool, shape ``(R - padding,)``."""
        return self.alive[: len(self.runs)].cpu().numpy()
