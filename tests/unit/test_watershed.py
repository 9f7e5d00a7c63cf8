"""The watershed and the persistence of minima, on analytic surfaces with known minima,
plateaus, ties and non-finite values, and against a plain sublevel-set union-find."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastsurface as fs
from tests.helpers import assert_close


def _surface(loss: np.ndarray, w1: np.ndarray | None = None, w2: np.ndarray | None = None) -> fs.Surface:
    w1 = np.arange(loss.shape[0], dtype=np.float64) if w1 is None else w1
    w2 = np.arange(loss.shape[1], dtype=np.float64) if w2 is None else w2
    return fs.Surface(
        w1, w2, torch.from_numpy(loss), ("w1", "w2"), "mse", "mean", "cpu", "float64", 1, 1, 0.0, "vmap", 1
    )


def _sublevel_persistence(loss: np.ndarray) -> list[tuple[float, float]]:
    """``(birth, death)`` of every sublevel-set component of an 8-connected grid, by
    adding points in increasing order (the definition; ties by row-major position)."""
    n1, n2 = loss.shape
    parent: dict[int, int] = {}
    birth: dict[int, tuple[float, int]] = {}

    def root(point: int) -> int:
        while parent[point] != point:
            point = parent[point]
        return point

    pairs = []
    for point in sorted(np.flatnonzero(np.isfinite(loss)), key=lambda p: (loss.flat[p], p)):
        i, j = divmod(int(point), n2)
        parent[point], birth[point] = point, (loss.flat[point], point)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                neighbour = (i + di) * n2 + j + dj
                if (di or dj) and 0 <= i + di < n1 and 0 <= j + dj < n2 and neighbour in parent:
                    a, b = root(point), root(neighbour)
                    if a != b:
                        elder, younger = sorted((a, b), key=lambda r: birth[r])
                        parent[younger] = elder
                        pairs.append((birth[younger][0], float(loss.flat[point])))
    pairs += [(birth[r][0], np.inf) for r in {root(p) for p in parent}]
    return sorted((b, d) for b, d in pairs if d > b)


@pytest.mark.parametrize("seed", range(6))
def test_persistence_equals_the_sublevel_set_definition(seed):
    loss = np.random.default_rng(seed).normal(size=(9 + seed, 13))
    if seed % 2:
        loss[seed, :] = np.nan  # a wall of NaNs: two regions, each with a lowest minimum
    found = fs.watershed(_surface(loss))
    assert sorted(zip(found.minimum_loss.tolist(), found.merge_loss.tolist(), strict=True)) == _sublevel_persistence(
        loss
    )


@pytest.mark.parametrize("seed", range(3))
def test_every_point_flows_downhill_to_its_basins_minimum(seed):
    loss = np.random.default_rng(seed).normal(size=(10, 12))
    found = fs.watershed(_surface(loss))
    for label, (a, b) in enumerate(found.minima):
        members = found.basin == label
        i, j = int(a), int(b)
        assert members[i, j] and loss[i, j] == loss[members].min() == found.minimum_loss[label]
        padded = np.pad(loss, 1, constant_values=np.inf)
        assert (padded[i : i + 3, j : j + 3] >= loss[i, j]).all()  # a local minimum
    assert (found.basin >= 0).all() and (np.diff(found.minimum_loss) >= 0).all()


def test_a_tilted_double_well():
    axis = np.linspace(-1.5, 1.5, 31)
    loss = (axis[:, None] ** 2 - 1) ** 2 + axis[None, :] ** 2 + 0.1 * axis[:, None]
    found = fs.watershed(_surface(loss, axis, axis))
    assert_close(found.minima, [[-1.0, 0.0], [1.0, 0.0]], rtol=0, atol=1e-12)
    assert_close(found.minimum_loss, [-0.1, 0.1], rtol=1e-12)
    lowest_pass = 1.0  # the saddle (0, 0) lies on the grid
    assert_close(found.persistence, [np.inf, lowest_pass - 0.1], rtol=1e-12)
    assert found.merged_into.tolist() == [-1, 0]
    assert (found.basin[axis < -0.1] == 0).all() and (found.basin[axis > 0.1] == 1).all()
    assert (found.merged(0.5) == found.basin).all() and (found.merged(1.0) == 0).all()


def test_tied_minima_are_labelled_in_row_major_order():
    axis = np.linspace(-1.5, 1.5, 31)
    loss = (axis[:, None] ** 2 - 1) ** 2 + axis[None, :] ** 2
    found = fs.watershed(_surface(loss, axis, axis))
    assert found.minima[:, 0].round(12).tolist() == [-1.0, 1.0]
    assert found.persistence[0] == np.inf and found.merged_into[1] == 0
    assert_close(found.persistence[1:], [1.0], rtol=1e-12)


def test_a_flat_minimum_is_one_basin():
    axis = np.linspace(-2, 2, 21)
    radius = np.hypot(axis[:, None], axis[None, :])
    found = fs.watershed(_surface(np.maximum(0.0, radius - 1.0), axis, axis))
    assert len(found.minima) == 1 and (found.basin == 0).all()
    first = np.argwhere(radius <= 1.0)[0]  # the disk's first point in row-major order
    assert found.minima[0].tolist() == [axis[first[0]], axis[first[1]]] and found.minimum_loss[0] == 0


def test_a_terrace_drains_through_its_exit():
    columns = np.arange(12)
    profile = np.where(columns < 3, columns, np.where(columns < 8, 3, columns - 4)).astype(np.float64)
    loss = np.tile(profile, (5, 1))
    loss[2, 0] = -1.0  # one lowest point, so the flat column 0 is no minimum of its own
    found = fs.watershed(_surface(loss))
    assert len(found.minima) == 1 and (found.basin == 0).all()
    assert found.minima[0].tolist() == [2.0, 0.0]


def test_steepest_means_drop_over_distance_on_uneven_axes():
    loss = np.array([[0.0, 1.0, -5.0]])
    found = fs.watershed(_surface(loss, np.array([0.0]), np.array([0.0, 0.1, 10.0])))
    assert found.basin.tolist() == [[1, 1, 0]]  # the middle point falls towards the nearer, steeper side


def test_non_finite_losses_belong_to_no_basin():
    loss = np.random.default_rng(0).normal(size=(6, 9))
    loss[:, 4] = np.nan
    loss[0, 0], loss[5, 8] = np.inf, -np.inf
    found = fs.watershed(_surface(loss))
    assert (found.basin[:, 4] == -1).all() and found.basin[0, 0] == found.basin[5, 8] == -1
    left, right = set(found.basin[:, :4].ravel()) - {-1}, set(found.basin[:, 5:].ravel()) - {-1}
    assert not left & right  # nothing flows across the wall
    assert (found.persistence == np.inf).sum() == 2
    assert np.isinf(found.persistence[found.merged_into == -1]).all()


def test_an_all_nan_surface_has_no_basin():
    found = fs.watershed(_surface(np.full((3, 4), np.nan)))
    assert len(found.minima) == 0 and (found.basin == -1).all() and (found.merged(1.0) == -1).all()


def test_the_seed_surface_has_its_minima_on_the_grids_edge():
    data = fs.piecewise_dataset(1000)
    surface = fs.loss_surface(fs.ANN(1, 1, 1), data, fs.axis(-3, 3, 0.25), fs.axis(-2, 2.01, 0.25))
    found = fs.watershed(surface)
    deepest = found.minima[0]
    assert abs(deepest[1]) == 2.0  # the loss keeps falling towards |w2| -> inf (README)
    assert found.basin.shape == surface.loss.shape


def test_only_surfaces_are_taken():
    with pytest.raises(fs.FastsurfaceError, match="`surface`"):
        fs.watershed(np.zeros((3, 3)))
