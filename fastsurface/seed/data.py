"""The seed article's synthetic data set and a seeded train/test split."""

from __future__ import annotations

import numbers
from typing import TypeVar

import numpy as np
import torch

from fastsurface._support.memory import available_bytes
from fastsurface._support.values import real_values
from fastsurface.errors import FastsurfaceError, check_positive_int, check_seed

Array = np.ndarray | torch.Tensor
# Each of ``x`` and ``y`` keeps its own type through the split.
_X = TypeVar("_X", np.ndarray, torch.Tensor)
_Y = TypeVar("_Y", np.ndarray, torch.Tensor)
_A = TypeVar("_A", np.ndarray, torch.Tensor)
# Peak bytes per sample while drawing: x, y, the noise and the target's temporaries, float64.
_BYTES_PER_SAMPLE = 64


def piecewise_target(x: np.ndarray) -> np.ndarray:
    """The noise-free target ``f(x)`` of the seed article's data, elementwise, float64.

    ``2x + 5`` for ``x < -2``, ``7.3 sin x`` for ``-2 <= x < 2``, ``-0.03 x³ + 2`` for ``x >= 2``;
    integer inputs are computed in float64 too (``np.piecewise`` keeps its input's dtype);
    a target beyond float64's range (``|x|`` past about 1e103 on the cubic piece) is ±inf,
    as IEEE arithmetic rounds it, without a warning.
    """
    x = real_values("x", x, "real numbers")
    with np.errstate(over="ignore"):
        return np.piecewise(
            x,
            [x < -2, (x >= -2) & (x < 2), x >= 2],
            [lambda v: 2 * v + 5, lambda v: 7.3 * np.sin(v), lambda v: -0.03 * v**3 + 2],
        )


def piecewise_dataset(n: int = 10_000, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Draw the article's data: ``x ~ N(1, 4.5²)``, ``y = f(x) + N(0, 1)``.

    Bit-for-bit what ``np.random.seed(seed)`` followed by the article's two
    ``np.random.normal`` calls gives, drawn from a private ``RandomState`` so that
    NumPy's global random state is left untouched.

    Returns:
        ``(x, y)``: float64 arrays of shape ``(n,)``.

    >>> x, y = piecewise_dataset(5)
    >>> x.shape, y.dtype
    ((5,), dtype('float64'))
    """
    check_positive_int("n", n)
    check_seed("seed", seed)
    available = available_bytes(torch.device("cpu"))
    if available is not None and n * _BYTES_PER_SAMPLE > available:
        raise FastsurfaceError(
            f"`n` of {n:,} samples needs about {n * _BYTES_PER_SAMPLE / 2**30:.3g} GiB, more than the "
            f"{available / 2**30:.3g} GiB available"
        )
    rng = np.random.RandomState(seed)
    x = rng.normal(1, 4.5, n)
    y = piecewise_target(x) + rng.normal(0, 1, x.shape)
    return x, y


def train_test_split(x: _X, y: _Y, test_size: float | int = 0.2, seed: int = 0) -> tuple[tuple[_X, _Y], tuple[_X, _Y]]:
    """Split paired samples at random into a training and a test part.

    A seeded permutation of the sample axis (axis 0) is cut in two: the first
    ``n_test`` permuted samples form the test part, the rest the training part.
    Both keep the permuted order. The article never states its split; fastsurface
    uses 80/20 with ``seed=0`` by default.

    Args:
        x, y: arrays or tensors with the same length ``n`` along axis 0.
        test_size: a fraction in ``(0, 1)`` of ``n`` (rounded to the nearest
            integer) or an integer count in ``[1, n - 1]``.
        seed: seed of the permutation (a private generator; no global state).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``, same types as the inputs.

    >>> (xtr, ytr), (xte, yte) = train_test_split(*piecewise_dataset(10))
    >>> len(xtr), len(xte)
    (8, 2)
    """
    n = _paired_length(x, y)
    check_seed("seed", seed)
    n_test = _test_count(test_size, n)
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    return (_take(x, train), _take(y, train)), (_take(x, test), _take(y, test))


def _take(values: _A, index: np.ndarray) -> _A:
    if isinstance(values, torch.Tensor):
        return values[torch.from_numpy(index).to(values.device)]
    return np.asarray(values)[index]


def _paired_length(x: Array, y: Array) -> int:
    for name, values in (("x", x), ("y", y)):
        if not isinstance(values, (np.ndarray, torch.Tensor)) or values.ndim == 0:
            raise FastsurfaceError(f"`{name}` must be an array or tensor of samples, got {type(values).__name__}")
    if len(x) != len(y):
        raise FastsurfaceError(f"`x` and `y` must hold the same number of samples, got {len(x)} and {len(y)}")
    return len(x)


def _test_count(test_size: float | int, n: int) -> int:
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        count = int(test_size)
    elif isinstance(test_size, numbers.Real) and 0 < float(test_size) < 1:
        count = round(float(test_size) * n)
    else:
        raise FastsurfaceError(f"`test_size` must be a fraction in (0, 1) or an integer count, got {test_size!r}")
    if not 1 <= count <= n - 1:
        raise FastsurfaceError(
            f"`test_size` must leave at least one sample on each side of the split of {n} "
            f"samples, got {test_size!r} ({count} test samples)"
        )
    return count
