import numpy as np
import pytest
import torch

import fastsurface as fs


def test_piecewise_dataset_is_bit_exact_with_the_article_recipe():
    state = np.random.get_state()
    try:
        np.random.seed(42)
        x = np.random.normal(1, 4.5, 10000)
        y = np.piecewise(
            x,
            [x < -2, (x >= -2) & (x < 2), x >= 2],
            [lambda v: 2 * v + 5, lambda v: 7.3 * np.sin(v), lambda v: -0.03 * v**3 + 2],
        ) + np.random.normal(0, 1, x.shape)
    finally:
        np.random.set_state(state)
    ours_x, ours_y = fs.piecewise_dataset()
    assert ours_x.dtype == ours_y.dtype == np.float64 and ours_x.shape == ours_y.shape == (10000,)
    assert np.array_equal(ours_x, x) and np.array_equal(ours_y, y)


def test_piecewise_dataset_leaves_global_numpy_state_alone():
    before = np.random.get_state()[1].copy()
    fs.piecewise_dataset(100, seed=3)
    assert np.array_equal(np.random.get_state()[1], before)


def test_piecewise_target_pieces():
    x = np.array([-3.0, -2.0, 0.5, 2.0, 4.0])
    expected = [2 * -3 + 5, 7.3 * np.sin(-2.0), 7.3 * np.sin(0.5), -0.03 * 8 + 2, -0.03 * 64 + 2]
    assert np.array_equal(fs.piecewise_target(x), expected)


def test_split_partitions_the_samples_reproducibly():
    x, y = fs.piecewise_dataset(1000)
    (xtr, ytr), (xte, _) = fs.train_test_split(x, y, test_size=0.2, seed=5)
    assert len(xtr) == 800 and len(xte) == 200
    assert np.array_equal(np.sort(np.concatenate([xtr, xte])), np.sort(x))
    pairs = dict(zip(x, y, strict=True))
    assert all(pairs[a] == b for a, b in zip(xtr, ytr, strict=True))
    again = fs.train_test_split(x, y, test_size=0.2, seed=5)
    assert np.array_equal(again[1][0], xte)
    other = fs.train_test_split(x, y, test_size=0.2, seed=6)
    assert not np.array_equal(other[1][0], xte)


def test_split_keeps_pairs_together_and_accepts_tensors():
    x = torch.arange(10.0)
    y = 2 * x
    (xtr, ytr), (xte, yte) = fs.train_test_split(x, y, test_size=3)
    assert isinstance(xte, torch.Tensor) and len(xte) == 3
    assert torch.equal(ytr, 2 * xtr) and torch.equal(yte, 2 * xte)


@pytest.mark.parametrize("test_size", [0, 1.0, -0.1, 10, "half", True])
def test_split_refuses_bad_test_size(test_size):
    with pytest.raises(fs.FastsurfaceError, match="`test_size`"):
        fs.train_test_split(np.zeros(10), np.zeros(10), test_size=test_size)


def test_split_refuses_unpaired_lengths():
    with pytest.raises(fs.FastsurfaceError, match="`x` and `y`"):
        fs.train_test_split(np.zeros(10), np.zeros(9))


@pytest.mark.parametrize("n", [0, -5, 2.5])
def test_dataset_refuses_bad_n(n):
    with pytest.raises(fs.FastsurfaceError, match="`n`"):
        fs.piecewise_dataset(n)
