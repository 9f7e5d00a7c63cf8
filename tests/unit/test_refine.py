import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.analysis.refine import fit_window
from tests.helpers import DEVICES, assert_close


@pytest.fixture(scope="module")
def seed_case():
    train, test = fs.train_test_split(*fs.piecewise_dataset(1000), test_size=0.2, seed=0)
    model = fs.ANN(1, 1, 1)
    return model, train, test


def coarse_surface(model, test, dtype):
    return fs.loss_surface(model, test, fs.axis(-2, 2, 0.4), fs.axis(-1.5, 2, 0.5), dtype=dtype, device="cpu")


WINDOWS = [
    ((-0.35, 0.45), (0.1, 0.72)),  # inside, fine values off the coarse grid
    ((1.5, 2.6), (-2.0, -1.2)),  # reaching beyond the coarse grid in both coordinates
]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-12), ("float32", 1e-6)])
def test_the_combined_surface_is_a_direct_evaluation_at_every_point(seed_case, window, dtype, rtol):
    model, _, test = seed_case
    coarse = coarse_surface(model, test, dtype)
    combined = fs.refine(coarse, model, test, window, 0.1, device="cpu")
    direct = fs.loss_surface(model, test, combined.w1, combined.w2, dtype=dtype, device="cpu")
    assert_close(combined.loss, direct.loss, rtol=rtol)
    # The coarse values are kept as they were, not recomputed.
    rows, columns = np.searchsorted(combined.w1, coarse.w1), np.searchsorted(combined.w2, coarse.w2)
    assert np.array_equal(combined.w1[rows], coarse.w1) and np.array_equal(combined.w2[columns], coarse.w2)
    assert np.array_equal(combined.loss[np.ix_(rows, columns)], coarse.loss)
    # Every fine point is there: the window's axes are subsets of the combined axes.
    for values, (start, stop) in ((combined.w1, window[0]), (combined.w2, window[1])):
        fine = fs.axis(start, stop, 0.1)
        assert np.abs(values[:, None] - fine[None, :]).min(axis=0).max() < 1e-12
        assert np.all(np.diff(values) > 0)
    assert (combined.labels, combined.dtype, combined.reduction) == (coarse.labels, dtype, coarse.reduction)


def test_fine_values_on_the_coarse_grid_are_not_duplicated(seed_case):
    model, _, test = seed_case
    coarse = coarse_surface(model, test, "float64")
    same = fs.refine(coarse, model, test, ((-2, 2), (-1.5, 2)), (0.4, 0.5))
    assert np.array_equal(same.w1, coarse.w1) and np.array_equal(same.loss, coarse.loss)
    halved = fs.refine(coarse, model, test, ((-2, 2), (-1.5, 2)), (0.2, 0.25))
    assert halved.loss.shape == (2 * len(coarse.w1), 2 * len(coarse.w2))


def test_windows_around_a_point_a_critical_point_and_a_trajectory(seed_case):
    model, train, test = seed_case
    assert fs.window_around((1.0, -2.0), (0.5, 0.25)) == ((0.5, 1.5), (-2.25, -1.75))
    coarse = coarse_surface(model, test, "float64")
    (saddle,) = fs.critical_points(coarse, model, test)
    assert fs.window_around(saddle, 0.3) == ((-0.3, 0.3), (-0.3, 0.3))
    path = fs.train_sgd(model, train, test, epochs=3)
    (a0, a1), (b0, b1) = fs.trajectory_window(path, margin=0.1)
    span1, span2 = np.ptp(path.w1), np.ptp(path.w2)
    assert_close(
        [a0, a1, b0, b1],
        [
            path.w1.min() - 0.1 * span1,
            path.w1.max() + 0.1 * span1,
            path.w2.min() - 0.1 * span2,
            path.w2.max() + 0.1 * span2,
        ],
        rtol=1e-12,
    )
    combined = fs.refine(coarse, model, test, fs.trajectory_window(path), 0.05)
    assert combined.w1.min() <= path.w1.min() and combined.w1.max() >= path.w1.max() - 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_the_loss_tensor_stays_on_the_compute_device_in_float64(seed_case, device):
    model, _, test = seed_case
    coarse = fs.loss_surface(model, test, fs.axis(-2, 2, 0.4), fs.axis(-1.5, 2, 0.5), device=device)
    combined = fs.refine(coarse, model, test, WINDOWS[0], 0.2, device=device)
    assert combined.loss_tensor.dtype == torch.float64 and combined.loss_tensor.device.type == device
    direct = fs.loss_surface(model, test, combined.w1, combined.w2, device=device)
    assert_close(combined.loss_tensor, direct.loss_tensor, rtol=1e-6)


@pytest.mark.parametrize(
    ("window", "step", "name"),
    [
        (((1, 0), (0, 1)), 0.1, "`window`"),
        (((0, 1), (0, np.inf)), 0.1, "`window`"),
        ((0, 1), 0.1, "`window`"),
        (((0, 1), (0, 1)), 0, "`step`"),
        (((0, 1), (0, 1)), (0.1, -1), "`step`"),
    ],
)
def test_bad_windows_and_steps_are_refused(seed_case, window, step, name):
    model, _, test = seed_case
    coarse = coarse_surface(model, test, "float64")
    with pytest.raises(fs.FastsurfaceError, match=name):
        fs.refine(coarse, model, test, window, step)
    with pytest.raises(fs.FastsurfaceError, match="`radius`"):
        fs.window_around((0, 0), 0)


def test_a_train_mode_surface_is_refined_in_train_mode(rng):
    """BatchNorm on batch statistics: the new points are evaluated as the coarse ones were."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    data = (rng.normal(size=(48, 3)) * 3 + 2, rng.normal(size=(48, 1)))
    plane = fs.random_plane(model, seed=0)
    options = {"plane": plane, "batch_size": 16, "train_mode": True}
    coarse = fs.loss_surface(model, data, [-1.0, 0.0, 1.0], [-1.0, 1.0], **options)
    fine = fs.refine(coarse, model, data, ((-1, 1), (-1, 1)), 0.5, plane=plane, batch_size=16)
    direct = fs.loss_surface(model, data, fine.w1, fine.w2, **options)
    assert fine.train_mode and direct.train_mode
    assert_close(fine.loss, direct.loss, rtol=1e-6)


def _path(w1, w2):
    w1, w2 = np.asarray(w1, dtype=float), np.asarray(w2, dtype=float)
    return fs.Trajectory(w1, w2, np.zeros(len(w1)), np.arange(len(w1)), ("w1", "w2"), "mean", "epoch")


def test_a_window_that_holds_the_path_is_kept_as_it_is():
    grid = fs.axis(-2, 2, 0.05)
    w1, w2 = fit_window(grid, grid, _path([-1.9, 0.0, 1.9], [-1.0, 1.94]), 0.05)
    assert np.array_equal(w1, grid) and np.array_equal(w2, grid)


@pytest.mark.parametrize(("w1", "w2"), [([-1.0, -2.992], [-1.0, -0.45]), ([0.0, 3.3], [-2.7, 2.1]), ([5.0], [-5.0])])
def test_a_path_that_leaves_grows_the_axes_by_whole_steps(w1, w2):
    grid, step = fs.axis(-2, 2, 0.25), 0.25
    path = _path(w1, w2)
    fitted = fit_window(grid, grid, path, step)
    for values, coordinates in zip(fitted, (path.w1, path.w2), strict=True):
        inside = np.searchsorted(values, grid[0])
        assert np.array_equal(values[inside : inside + len(grid)], grid)  # the given values, kept exactly
        assert_close(np.diff(values), np.full(len(values) - 1, step), rtol=1e-12)
        span = max(grid[-1], coordinates.max()) - min(grid[0], coordinates.min())  # the margin's base
        for edge, beyond, outward in ((values[0], coordinates.min(), -1), (values[-1], coordinates.max(), 1)):
            if outward * (beyond - edge) > 0:  # the path left on this side: now covered, with the margin
                assert outward * (edge - beyond) >= 0.05 * span - 1e-12
                assert outward * (edge - beyond) < 0.05 * span + step


def test_fitting_refuses_what_it_cannot_fit():
    grid = fs.axis(-2, 2, 0.5)
    with pytest.raises(fs.FastsurfaceError, match=r"`trajectory` spans w1 in \[-1e\+09, -1\].*raise `step`"):
        fit_window(grid, grid, _path([-1.0, -1e9], [0.0, 0.0]), 0.5)
    with pytest.raises(fs.FastsurfaceError, match="`trajectory` must be finite"):
        fit_window(grid, grid, _path([0.0, np.nan], [0.0, 0.0]), 0.5)
    with pytest.raises(fs.FastsurfaceError, match="`step`"):
        fit_window(grid, grid, _path([0.0], [0.0]), 0.0)
    with pytest.raises(fs.FastsurfaceError, match="`trajectory` must be a fastsurface"):
        fit_window(grid, grid, [(0.0, 0.0)], 0.5)
