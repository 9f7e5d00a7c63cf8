"""Property-based checks of the engine against a float64 numpy reference.

Hypothesis draws axes, data sizes, batch sizes, tile sizes and memory budgets; the
examples are derandomised so every run (and CI) checks the same cases.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastsurface as fs
from tests.helpers import assert_close, numpy_seed_loss

REPEATABLE = settings(max_examples=40, derandomize=True, deadline=None, database=None)

axes = st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=6, unique=True).map(sorted)


def reference(w1, w2, x, y, reduction, batch_size):
    """float64 loss of the seed model: the sample mean, or the mean of consecutive batch means."""
    if reduction == "mean":
        return numpy_seed_loss(w1, w2, x, y)
    starts = range(0, len(x), batch_size)
    return np.mean([numpy_seed_loss(w1, w2, x[s : s + batch_size], y[s : s + batch_size]) for s in starts], axis=0)


@pytest.mark.slow
@REPEATABLE
@given(
    w1=axes,
    w2=axes,
    samples=st.integers(1, 60),
    batch_size=st.integers(1, 20),
    reduction=st.sampled_from(["mean", "batch_mean"]),
    tile_points=st.none() | st.integers(1, 40),
    memory_budget=st.none() | st.integers(2**12, 2**20),
    seed=st.integers(0, 2**16),
)
def test_any_grid_data_and_tiling_give_the_float64_reference(
    w1, w2, samples, batch_size, reduction, tile_points, memory_budget, seed
):
    x, y = fs.piecewise_dataset(samples, seed=seed)
    w1, w2 = np.asarray(w1), np.asarray(w2)
    surface = fs.loss_surface(
        fs.ANN(1, 1, 1),
        (x, y),
        w1,
        w2,
        reduction=reduction,
        batch_size=batch_size,
        tile_points=tile_points,
        memory_budget=memory_budget,
        device="cpu",
        dtype="float64",
    )
    assert_close(surface.loss, reference(w1, w2, x, y, reduction, batch_size), rtol=1e-12, atol=1e-12)
    expected_batches = -(-samples // batch_size) if reduction == "batch_mean" else surface.batches
    assert surface.samples == samples and surface.batches == expected_batches


@REPEATABLE
@given(
    points=st.lists(st.tuples(st.floats(-3, 3, width=32), st.floats(-3, 3, width=32)), min_size=1, max_size=12),
    samples=st.integers(1, 40),
    tile_points=st.none() | st.integers(1, 5),
)
def test_points_anywhere_give_the_float64_reference(points, samples, tile_points):
    x, y = fs.piecewise_dataset(samples)
    model = fs.ANN(1, 1, 1)
    coordinates = np.asarray(points, dtype=np.float64)
    result = fs.evaluate_points(
        model, fs.default_plane(model), (x, y), coordinates, tile_points=tile_points, device="cpu", dtype="float64"
    )
    expected = [numpy_seed_loss(np.array([a]), np.array([b]), x, y)[0, 0] for a, b in coordinates]
    assert_close(result.loss, expected, rtol=1e-12, atol=1e-12)
