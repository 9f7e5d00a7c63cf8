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
torch's kernels; ``"compiled"`` traces it once and compiles it with inductor
(``engine._inductor.CompiledFunction``, without dynamo), which fuses forward, loss and
backward of a tile, and the divergence stops, into one loop over runs and samples
without intermediates. A forward that branches on tensor values cannot be traced:
``"compiled"`` refuses it and ``"auto"`` trains it on ``"vmap"``. On CPU the compiled
float32 ``tanh`` is ``engine._inductor``'s, within 4e-7 of torch's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fastsurface._support.identity import architecture
from fastsurface.analysis._optimisers import OptimizerGroup, build
from fastsurface.analysis._optimisers import step as step_optimiser
from fastsurface.engine._inductor import CompiledFunction
from fastsurface.engine._kernels import compile_available
from fastsurface.engine._losses import Loss
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane, TensorDict

StepFunction = Callable[..., torch.Tensor]
COORDINATES = "coordinates"


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
    """``f(trainable, x, y, state, origin, first, second, diverged_step, taken) ->
    diverged_step`` for a tile: sets the ``.grad`` of each stacked tensor of ``trainable``
    (``(tile, ...)`` leaves) to every run's gradient of its batch-mean loss, and returns
    the tile's stops after step ``taken`` (``stops``; ``taken`` a float64 0-d tensor, so
    that a compiled step is not specialised to it); ``x``, ``y`` are one batch for all
    runs, or one per run stacked along a first dimension when ``per_run_batches``. The
    compiled route computes the stops in the same kernel as the gradients."""
    module, space = layout.module, layout.space

    def run_loss(
        trainable: TensorDict,
        x: torch.Tensor,
        y: torch.Tensor,
        state: TensorDict,
        origin: TensorDict,
        first: TensorDict,
        second: TensorDict,
    ) -> torch.Tensor:
        if space == "plane":
            coordinates = trainable[COORDINATES]
            moving = Plane(origin, first, second).params(coordinates[0], coordinates[1])
        else:
            moving = trainable
        prediction = functional_call(module, {**state, **moving}, (x,))
        return loss.per_sample(prediction, y).mean()

    data_dim = 0 if per_run_batches else None
    in_dims = (0, data_dim, data_dim, None, None, None, None)
    if method == "vmap":
        # A vmapped forward differentiated by autograd: a fraction of vmap(grad)'s
        # per-call overhead; the sum's gradient is each run's own (d sum / d loss_k = 1).
        losses_of = vmap(run_loss, in_dims=in_dims, randomness="different")

        def eager(trainable: TensorDict, *rest: Any) -> torch.Tensor:
            for tensor in trainable.values():
                tensor.grad = None
            *inputs, diverged_step, taken = rest
            losses = losses_of(trainable, *inputs)
            losses.sum().backward()
            return stops(diverged_step, {n: t.detach() for n, t in trainable.items()}, losses.detach(), taken)

        return eager
    gradients_of = vmap(grad_and_value(run_loss), in_dims=in_dims, randomness="different")

    def step_and_stops(trainable: TensorDict, *rest: Any) -> tuple[TensorDict, torch.Tensor]:
        *inputs, diverged_step, taken = rest
        gradients, losses = gradients_of(trainable, *inputs)
        return gradients, stops(diverged_step, trainable, losses, taken)

    compiled = CompiledFunction(step_and_stops, _cache_key(layout, loss, tile, per_run_batches))

    def fused(trainable: TensorDict, *rest: Any) -> torch.Tensor:
        detached = {name: tensor.detach() for name, tensor in trainable.items()}  # no autograd graph to compile
        gradients, diverged_step = compiled(detached, *rest)
        for name, tensor in trainable.items():
            tensor.grad = gradients[name]
        return diverged_step

    return fused


def stops(
    diverged_step: torch.Tensor, trainable: TensorDict, losses: torch.Tensor, taken: torch.Tensor
) -> torch.Tensor:
    """A tile's ``diverged_step`` (as ``StackedTile`` holds it) after step ``taken``: a
    live run (``-1``) stops at step ``taken - 1`` when a tensor of ``trainable`` it
    entered the step with has a non-finite entry, else at ``taken`` when its batch loss
    ``losses`` is not finite; ``(R,)`` float64, ``taken`` a 0-d tensor.

    Written in floating point (``t * 0`` is 0 for a finite entry, NaN otherwise) because
    inductor's code for boolean masks cost a compiled seed step a quarter of its time."""
    entering = sum((t * 0).reshape(len(t), -1).sum(dim=1) for t in trainable.values())
    diverged_step = torch.where((diverged_step < 0) & (entering != 0), taken - 1, diverged_step)
    return torch.where((diverged_step < 0) & ~torch.isfinite(losses), taken, diverged_step)


def _cache_key(layout: Layout, loss: Loss, tile: int, per_run: bool) -> Hashable:
    """What a compiled step depends on besides its input tensors."""
    if not compile_available(layout.plane.device):
        raise FastsurfaceError(
            "`training_method` 'compiled' needs torch.compile's toolchain: a C++ compiler on CPU, Triton on CUDA"
        )
    return (
        architecture(layout.module),
        layout.space,
        tile,
        per_run,
        tuple(layout.plane.origin),
        loss.per_sample,
        torch.get_num_threads(),  # inductor builds its CPU loops for the thread count of the moment
    )


class StackedTile:
    """``R`` runs of one optimiser group, trained together; the last ``padding`` of them
    are copies that only fill a compiled tile's fixed size.

    Attributes:
        runs: the indices (among all runs) of the tile's real runs, shape ``(R - padding,)``.
        tensors: the stacked trainable tensors, by name, each ``(R, ...)``: leaves that
            require gradients, as an optimiser's parameters do.
        diverged_step: the step at which each run's loss or parameters stopped being
            finite, ``-1`` while they are, float64 ``(R,)`` (exact to 2**53 steps).
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
        self.diverged_step = torch.full((size,), -1, dtype=torch.float64, device=layout.plane.device)

    def step(self, x: torch.Tensor, y: torch.Tensor, taken: int) -> None:
        """Optimiser step ``taken`` (from 1) of every run on its batch. A run stops at the
        first step whose batch loss is not finite, or after the step whose update left
        its parameters non-finite (found as the next step starts, or by ``finish``): its
        later records are NaN, and its entries, updated elementwise, never reach another
        run's."""
        step = torch.tensor(float(taken), dtype=torch.float64, device=self.diverged_step.device)
        parts = (self.layout.state, *self.layout.plane_parts, self.diverged_step, step)
        self.diverged_step = self.function(self.tensors, x, y, *parts)
        step_optimiser(self.optimizer)

    def finish(self, taken: int) -> None:
        """Stop the runs whose last step (``taken``) left their parameters non-finite."""
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(t).reshape(len(t), -1).all(dim=1) for t in self.tensors.values()])
        self.diverged_step = torch.where((self.diverged_step < 0) & ~finite.all(dim=0), taken, self.diverged_step)

    def stopped_at(self) -> np.ndarray:
        """The step at which each real run stopped, ``-1`` for those still finite, int64
        ``(R - padding,)``."""
        return self.diverged_step[: len(self.runs)].to(torch.int64).cpu().numpy()

    def vectors(self) -> torch.Tensor:
        """The real runs' trainable tensors flattened and concatenated in name order,
        float64 on the CPU, shape ``(R - padding, D)``."""
        count = len(self.runs)
        flat = [t.detach()[:count].reshape(count, -1) for t in self.tensors.values()]
        return torch.cat(flat, dim=1).to("cpu", torch.float64)

    def finite(self) -> np.ndarray:
        """Whether each real run is still finite, bool, shape ``(R - padding,)``."""
        return self.stopped_at() < 0
