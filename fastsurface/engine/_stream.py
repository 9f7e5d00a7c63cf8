"""Evaluation data as a stream of weighted sample chunks, read once per surface.

Both reductions are weighted sums of per-sample losses divided by a count:
``mean`` weighs every sample 1 and divides by the number of samples; ``batch_mean``
weighs a sample of a batch of size ``n_b`` by ``1 / n_b`` and divides by the number
of batches. Chunks can therefore be cut anywhere, independently of batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeGuard, cast

import numpy as np
import torch

from fastsurface._support.choices import REDUCTIONS
from fastsurface._support.devices import check_representable
from fastsurface.errors import FastsurfaceError, check_choice

# An ``(x, y)`` pair of arrays/tensors, as ``is_pair`` recognises it (a two-item list counts).
Pair = tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]
# Samples of the data the engine probes first: shapes, the model's working memory, the checks.
PROBE_SAMPLES = 4


@dataclass(frozen=True)
class Chunk:
    """Consecutive samples on the compute device.

    Attributes:
        x: inputs, shape ``(S, *input_shape)``.
        y: targets, shape ``(S, *target_shape)``.
        weight: per-sample weights of the reduction, shape ``(S,)``.
        samples: ``S``.
        batches: batches that end in this chunk (adds up to the batch count).
    """

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor
    samples: int
    batches: int


def check_reduction(reduction: str) -> None:
    check_choice("reduction", reduction, REDUCTIONS)


def is_pair(data: object) -> TypeGuard[Pair]:
    """Whether ``data`` is an ``(x, y)`` pair of arrays/tensors (not an iterable of batches)."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(part, (np.ndarray, torch.Tensor)) for part in data)
    )


def pair_tensors(data: tuple[object, object]) -> tuple[torch.Tensor, torch.Tensor]:
    """An ``(x, y)`` pair as tensors on their own device; 1-D real arrays become ``(n, 1)``.

    An ``(n,)`` real array holds ``n`` samples of one value: the article's inputs and
    targets. Making it a column keeps predictions ``(n, 1)`` and targets the same shape.
    Integer targets are class labels and keep their shape.
    """
    x, y = (_as_tensor(part) for part in data)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise FastsurfaceError(
            f"`data` must be an (x, y) pair with the same number of samples along axis 0, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if len(x) == 0:
        raise FastsurfaceError("`data` must hold at least one sample, got 0")
    return (x[:, None] if x.ndim == 1 else x), (y[:, None] if y.ndim == 1 and y.dtype.is_floating_point else y)


def chunks(
    data: object,
    *,
    reduction: str,
    batch_size: int,
    chunk_samples: Callable[[torch.Tensor], int],
    device: torch.device,
    dtype: torch.dtype,
) -> Iterator[Chunk]:
    """Stream ``data`` as chunks of at most ``chunk_samples`` samples on ``device``.

    Args:
        data: an ``(x, y)`` pair, cut into consecutive batches of ``batch_size``
            (the last may be smaller), or an iterable of ``(x, y)`` batches used as
            they come (a ``DataLoader``); a 1-D input batch is read as a column,
            targets are taken as given.
        chunk_samples: called once with the first few inputs (on ``device``, in
            ``dtype``); returns the most samples a chunk may hold.
    """
    if is_pair(data):
        return _pair_chunks(*pair_tensors(data), reduction, batch_size, chunk_samples, device, dtype)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, np.ndarray, torch.Tensor)):
        return _batch_chunks(data, reduction, chunk_samples, device, dtype)
    raise FastsurfaceError(
        f"`data` must be an (x, y) pair of arrays/tensors or an iterable of (x, y) batches, got {type(data).__name__}"
    )


def _pair_chunks(
    x: torch.Tensor,
    y: torch.Tensor,
    reduction: str,
    batch_size: int,
    chunk_samples: Callable[[torch.Tensor], int],
    device: torch.device,
    dtype: torch.dtype,
) -> Iterator[Chunk]:
    n = len(x)
    weight = _pair_weights(n, reduction, batch_size)
    most = chunk_samples(to_device(x[:PROBE_SAMPLES], device, dtype))
    yield from _sliced(
        x, y, weight, most, device, dtype, lambda start, stop: _batches_ending(start, stop, n, batch_size)
    )


def _sliced(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    most: int,
    device: torch.device,
    dtype: torch.dtype,
    batches_ending: Callable[[int, int], int],
) -> Iterator[Chunk]:
    """Chunks of at most ``most`` consecutive samples; ``batches_ending(start, stop)``
    counts the batches that end in samples ``start .. stop - 1``."""
    for start in range(0, len(x), most):
        stop = min(len(x), start + most)
        yield Chunk(
            x=to_device(x[start:stop], device, dtype),
            y=to_device(y[start:stop], device, dtype),
            weight=weight[start:stop].to(device=device, dtype=dtype),
            samples=stop - start,
            batches=batches_ending(start, stop),
        )


def _pair_weights(n: int, reduction: str, batch_size: int) -> torch.Tensor:
    if reduction == "mean":
        return torch.ones(n, dtype=torch.float64)
    sizes = torch.full((math.ceil(n / batch_size),), batch_size, dtype=torch.float64)
    sizes[-1] = n - batch_size * (len(sizes) - 1)
    return (1.0 / sizes).repeat_interleave(sizes.long())


def _batches_ending(start: int, stop: int, n: int, batch_size: int) -> int:
    """Number of batch ends (``k * batch_size`` or ``n``) in ``(start, stop]``."""
    ends = stop // batch_size - start // batch_size
    return ends + (1 if stop == n and n % batch_size else 0)


def _batch_chunks(
    batches: Iterable[object],
    reduction: str,
    chunk_samples: Callable[[torch.Tensor], int],
    device: torch.device,
    dtype: torch.dtype,
) -> Iterator[Chunk]:
    most = 0
    for number, batch in enumerate(batches):
        x, y = batch_tensors(number, batch)
        n = len(x)
        most = most or chunk_samples(to_device(x[:PROBE_SAMPLES], device, dtype))
        weight = torch.full((n,), 1.0 if reduction == "mean" else 1.0 / n, dtype=torch.float64)
        yield from _sliced(x, y, weight, most, device, dtype, _ends_at(n))


def _ends_at(n: int) -> Callable[[int, int], int]:
    """``batches_ending`` of one batch of ``n`` samples: it ends in the chunk that reaches sample ``n``."""
    return lambda _start, stop: int(stop == n)


def check_data(name: str, data: object) -> None:
    """Refuse, before any work, ``data`` that is neither an ``(x, y)`` pair of real arrays
    (checked whole: shapes, dtypes, finite values) nor an iterable of batches."""
    if is_pair(data):
        try:
            pair_tensors(data)
        except FastsurfaceError as error:
            raise FastsurfaceError(str(error).replace("`data`", f"`{name}`", 1)) from error
    elif not isinstance(data, Iterable) or isinstance(data, (str, bytes, np.ndarray, torch.Tensor, dict)):
        raise FastsurfaceError(
            f"`{name}` must be an (x, y) pair of arrays/tensors or an iterable of (x, y) batches, "
            f"got {type(data).__name__}"
        )


def check_reusable(name: str, data: object, passes: int, why: str) -> None:
    """Refuse, before any work, a one-shot iterator (a generator, say) where ``passes`` > 1
    passes over ``data`` are needed (``why`` says which): the second pass would find it
    empty, after the first pass's work. Pairs, lists and ``DataLoader``s can be re-read."""
    if passes > 1 and isinstance(data, Iterator):
        raise FastsurfaceError(
            f"`{name}` is a one-shot iterator ({type(data).__name__}) but is read {passes} times ({why}); "
            "pass an (x, y) pair, a list of batches or a DataLoader"
        )


def iterate(data: object) -> Iterator[object]:
    """``iter(data)`` for data that is not a pair: callers document it as an iterable of
    batches, and anything else raises ``TypeError`` here, exactly as ``iter`` does."""
    return iter(cast("Iterable[object]", data))


def batch_tensors(number: int, batch: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``number`` of an iterable as tensors; a 1-D input batch becomes a column."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise FastsurfaceError(f"`data` batch {number} must be an (x, y) pair, got {type(batch).__name__}")
    x, y = (_as_tensor(part) for part in batch)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise FastsurfaceError(
            f"`data` batch {number} must hold the same non-zero number of inputs and targets, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return (x[:, None] if x.ndim == 1 else x), y


def _as_tensor(values: object) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        if values.device.type == "meta":
            raise FastsurfaceError("`data` tensors are on the meta device (shapes without values)")
        if values.layout != torch.strided:
            raise FastsurfaceError(f"`data` tensors must be dense, got layout {values.layout}; use .to_dense()")
        tensor = values.detach()
    else:
        try:
            tensor = torch.as_tensor(np.ascontiguousarray(values))
        except (TypeError, ValueError, RuntimeError) as error:
            raise FastsurfaceError(f"`data` must hold numeric arrays, got {type(values).__name__}") from error
    if not (
        tensor.dtype.is_floating_point
        or tensor.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)
    ):
        raise FastsurfaceError(f"`data` must hold real numbers, got dtype {tensor.dtype}")
    if tensor.dtype.is_floating_point and not torch.isfinite(tensor).all():
        raise FastsurfaceError("`data` must hold finite values only, got NaN or inf")
    return tensor


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Real values in the compute ``dtype`` (refused beyond its range); integers (class
    labels) as int64. Always a copy, never the caller's memory: a model that writes into
    its inputs must not reach the caller's data."""
    check_representable("data", tensor, dtype)
    target = dtype if tensor.dtype.is_floating_point else torch.int64
    return tensor.to(device=device, dtype=target, non_blocking=True, copy=True)
