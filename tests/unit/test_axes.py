import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.engine.axes import as_axis


def test_seed_axis_has_80_values_like_arange():
    values = fs.axis(-2, 2, 0.05)
    assert values.dtype == np.float64 and values.shape == (80,)
    np.testing.assert_allclose(values, np.arange(-2, 2, 0.05), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("start", "stop", "step", "count"), [(1, 1.3, 0.1, 3), (0, 1, 0.1, 10), (-1, 1, 0.2, 10)])
def test_axis_never_adds_a_drifted_end_point(start, stop, step, count):
    values = fs.axis(start, stop, step)
    assert len(values) == count
    assert values[-1] < stop - step / 2


def test_axis_matches_arange_count_on_random_ranges(rng):
    for _ in range(200):
        start = rng.uniform(-5, 5)
        step = rng.uniform(0.001, 1)
        stop = start + rng.uniform(0.01, 10)
        values = fs.axis(start, stop, step)
        assert values[0] == start and values[-1] < stop
        # one more step would reach stop, up to the documented drift guard
        assert values[-1] + step >= stop - 1e-9 * (stop - start)
        np.testing.assert_allclose(np.diff(values), step, rtol=1e-9)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((0, 1, 0), "step"),
        ((0, 1, -0.1), "step"),
        ((1, 0, 0.1), "stop"),
        ((0, float("nan"), 0.1), "stop"),
        ((float("inf"), 1, 0.1), "start"),
    ],
)
def test_axis_refuses_bad_arguments(args, name):
    with pytest.raises(fs.FastsurfaceError, match=f"`{name}`"):
        fs.axis(*args)


def test_explicit_axes_are_accepted_from_lists_and_tensors():
    assert as_axis("w1", [0.0, 0.5, 2.0]).tolist() == [0.0, 0.5, 2.0]
    assert as_axis("w2", torch.tensor([1.0])).tolist() == [1.0]


@pytest.mark.parametrize("values", [[], [[1.0, 2.0]], [1.0, 1.0], [2.0, 1.0], [0.0, float("nan")], ["a"]])
def test_explicit_axes_are_validated(values):
    with pytest.raises(fs.FastsurfaceError, match="`w1`"):
        as_axis("w1", values)
