"""SGD on a plane's two coordinates, recording the path and its test loss."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from fastsurface._support.choices import Reduction
from fastsurface._support.copying import private_copy
from fastsurface._support.devices import DeviceLike, DTypeLike, check_representable
from fastsurface.analysis._descent import plane_descent
from fastsurface.engine import _stream as stream
from fastsurface.engine._losses import PerSampleLoss
from fastsurface.engine.evaluate import check_prediction_shape, point_losses
from fastsurface.engine.options import DEFAULT_BATCH_SIZE, EvalOptions
from fastsurface.errors import FastsurfaceError, check_bool, check_choice, check_positive_int, check_seed
from fastsurface.planes.plane import Plane, check_plane, default_plane
from fastsurface.results import Trajectory

RECORDS = ("epoch", "step")
# More SGD steps than this is taken for a typo (hours of work, and a step-recorded path
# that no longer fits in memory) and refused up front.
MAX_STEPS = 10**7


def train_sgd(
    model: nn.Module,
    train: object,
    test: object,
    *,
    lr: float = 1e-2,
    epochs: int = 25,
    start: tuple[float, float] = (-1.0, -1.0),
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    record: str = "epoch",
    plane: Plane | None = None,
    loss: str | PerSampleLoss = "mse",
    reduction: Reduction = "mean",
    device: DeviceLike = "auto",
    dtype: DTypeLike = torch.float32,
    progress: bool = False,
) -> Trajectory:
    """Train the plane coordinates with plain SGD from ``start``; record the path.

    The training loss is the batch mean of the per-sample ``loss``. Only the
    two coordinates move (every other parameter stays at the plane's value), so the
    recorded path lies on the plane; for the seed ``ANN(1, 1, 1)`` that is ordinary
    SGD on ``w1`` and ``w2``. The caller's model is not modified. A plain
    ``Linear → Tanh → Linear`` stack with the ``"mse"`` loss on the CPU (the seed) is
    differentiated in closed form, anything else by autograd; both give the path of
    autograd through the two coordinates to the dtype's rounding.

    Args:
        model: the network; only read.
        train: an ``(x, y)`` pair, shuffled into batches of ``batch_size`` each epoch
            by a generator seeded with ``seed``, or an iterable of batches read once
            per epoch (a ``DataLoader``; its own shuffling then applies).
        test: evaluation data, as ``data`` of ``loss_surface``.
        lr: learning rate, > 0.
        epochs: passes over ``train``, >= 1.
        start: initial coordinates ``(w1, w2)``; the article's ``(-1, -1)``.
        batch_size: training batch size, and the test batches of ``"batch_mean"``.
        seed: seed of the shuffling (a private generator; no global state).
        record: ``"epoch"``: once before training and after every epoch; ``"step"``:
            also after every optimiser step.
        plane, loss, reduction, device, dtype: as in ``loss_surface``.
        progress: show a progress bar over epochs on stderr.

    Returns:
        A ``Trajectory`` starting at ``start``.
    """
    _check_training(lr, epochs, start, record)
    check_positive_int("batch_size", batch_size)
    check_seed("seed", seed)
    check_steps(train, epochs, batch_size)
    stream.check_data("train", train)
    stream.check_reusable("train", train, epochs, "once per epoch")
    stream.check_data("test", test)
    check_bool("progress", progress)
    options = EvalOptions(loss, reduction, batch_size, device, dtype)
    objective, resolved, compute = options.objective, options.compute_device, options.compute_dtype
    check_representable("lr", np.array([lr], dtype=np.float64), compute)  # an infinite step is no SGD
    check_representable("start", np.array(start, dtype=np.float64), compute)
    plane = default_plane(model) if plane is None else plane
    check_plane(model, plane)
    module = private_copy(model).to(device=resolved, dtype=compute).eval()
    local_plane = plane.to(resolved, compute)
    descent = plane_descent(module, local_plane, objective, lr=lr, start=start)
    generator = torch.Generator().manual_seed(int(seed))
    path, steps = [descent.position()], [0]
    taken = 0
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging path is reported below
        for _ in _epochs(epochs, progress):
            for x, y, size in training_runs(train, batch_size, generator, resolved, compute):
                if taken == 0:
                    check_prediction_shape(module, local_plane, objective, x[:size], y[:size])
                for _ in descent.steps(x, y, size):
                    taken += 1
                    if record == "step":
                        path.append(descent.position())
                        steps.append(taken)
            if record == "epoch":
                path.append(descent.position())
                steps.append(taken)
    points = torch.stack(path).to(torch.float64)
    if not bool(torch.isfinite(points).all()):
        diverged = int(torch.isfinite(points).all(dim=1).logical_not().nonzero()[0, 0])
        raise FastsurfaceError(
            f"`lr` of {lr:g} makes SGD diverge: the weights are no longer finite after step {steps[diverged]}; lower it"
        )
    losses = point_losses(model, plane, test, points, options).loss
    return Trajectory(
        w1=points[:, 0].cpu().numpy(),
        w2=points[:, 1].cpu().numpy(),
        loss=losses.cpu().numpy(),
        step=np.asarray(steps, dtype=np.int64),
        labels=plane.labels,
        reduction=reduction,
        record=record,
    )


def _epochs(epochs: int, progress: bool) -> Iterable[int]:
    """The epoch numbers, behind a progress bar on stderr with ``progress``."""
    if not progress:
        return range(epochs)
    from tqdm.auto import tqdm  # imported only for a bar: it costs tens of milliseconds

    return tqdm(range(epochs), desc="training", unit="epoch", leave=False)


def _check_training(lr: float, epochs: int, start: tuple[float, float], record: str) -> None:
    if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not (0 < lr < math.inf):
        raise FastsurfaceError(f"`lr` must be a finite number > 0, got {lr!r}")
    check_positive_int("epochs", epochs)
    if (
        not isinstance(start, (tuple, list))
        or len(start) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in start)
    ):
        raise FastsurfaceError(f"`start` must be two finite numbers (w1, w2), got {start!r}")
    check_choice("record", record, RECORDS)


def check_steps(train: object, epochs: int, batch_size: int) -> None:
    if stream.is_pair(train):
        per_epoch = math.ceil(len(train[0]) / batch_size)
    else:
        per_epoch = len(train) if hasattr(train, "__len__") else 1
    if epochs * per_epoch > MAX_STEPS:
        raise FastsurfaceError(
            f"`epochs` of {epochs} at {per_epoch} batches per epoch means {epochs * per_epoch:,} SGD steps, more than "
            f"the {MAX_STEPS:,} fastsurface accepts (a likely typo); lower it"
        )


def training_batches(
    train: object, batch_size: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x, y)`` batches on ``device``: a pair shuffled by ``generator`` into
    batches of ``batch_size``, or an iterable of batches as it comes."""
    for x, y, size in training_runs(train, batch_size, generator, device, dtype):
        yield from zip(x.split(size), y.split(size), strict=True)


def training_runs(
    train: object, batch_size: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """One epoch of ``training_batches`` as runs of consecutive batches ``(x, y, size)``,
    each batch ``size`` rows of ``x`` and ``y`` (the last may be shorter): a pair is one
    run, the whole epoch shuffled (so a route can convert it at once), and every batch of
    an iterable is a run of its own."""
    if stream.is_pair(train):
        x, y = (stream.to_device(t, device, dtype) for t in stream.pair_tensors(train))
        order = torch.randperm(len(x), generator=generator).to(device)
        # One gather an epoch; index_select, because advanced indexing runs a threaded kernel
        # that costs milliseconds on a busy machine.
        yield x.index_select(0, order), y.index_select(0, order), batch_size
        return
    yielded = False
    for number, batch in enumerate(stream.iterate(train)):
        x, y = stream.batch_tensors(number, batch)
        yielded = True
        yield stream.to_device(x, device, dtype), stream.to_device(y, device, dtype), len(x)
    if not yielded:
        raise FastsurfaceError("`train` yielded no batch; pass a pair or a re-iterable loader, not a used-up iterator")
