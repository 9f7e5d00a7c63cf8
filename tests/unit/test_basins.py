"""Basin maps: attractors by single linkage (against a brute-force reference), settling
steps, divergence, and their disagreement with the watershed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.analysis.basins import single_linkage
from fastsurface.cli import main


def _brute_force_clusters(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Connected components of the graph linking points at most ``tolerance`` apart."""
    linked = np.linalg.norm(points[:, None] - points[None, :], axis=-1) <= tolerance
    label = np.full(len(points), -1)
    for start in range(len(points)):
        if label[start] < 0:
            label[start], stack = start, [start]
            while stack:
                for other in np.flatnonzero(linked[stack.pop()] & (label < 0)):
                    label[other] = start
                    stack.append(other)
    return label


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("tolerance", [0.05, 0.2, 0.7])
@pytest.mark.parametrize("seed", range(3))
def test_single_linkage_equals_the_brute_force_clusters(seed, tolerance):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-3, 3, size=(5, 2))
    points = np.concatenate([centre + rng.normal(scale=0.15, size=(60, 2)) for centre in centres])
    points = np.concatenate([points, rng.uniform(-3, 3, size=(40, 2))])
    assert _same_partition(single_linkage(points, tolerance), _brute_force_clusters(points, tolerance))


def test_a_chain_links_across_cells_and_labels_go_by_size():
    chain = np.stack([np.arange(10) * 0.19, np.zeros(10)], axis=1)  # links of 0.19 <= 0.2, cells of 0.1
    pair = np.array([[5.0, 5.0], [5.0, 5.15]])
    assert single_linkage(np.concatenate([pair, chain]), 0.2).tolist() == [1, 1] + [0] * 10
    assert single_linkage(np.array([[0.0, 0.0], [0.0, 0.2000001]]), 0.2).tolist() == [0, 1]


def _runs(positions: np.ndarray, steps: np.ndarray, diverged_step: np.ndarray, grid: tuple[int, int]):
    count, records = positions.shape[:2]
    return fs.Trajectories(
        positions=positions,
        loss=np.arange(count * records, dtype=np.float64).reshape(count, records),
        step=steps,
        diverged_step=diverged_step,
        residual=np.zeros((count, records)),
        final_parameters=None,
        group=np.zeros(count, dtype=np.int64),
        group_names=("SGD(lr=0.01)",),
        grid_w1=np.arange(grid[0], dtype=np.float64),
        grid_w2=np.arange(grid[1], dtype=np.float64),
        labels=("w1", "w2"),
        reduction="mean",
        record="epoch",
        space="plane",
        evaluated="recorded",
        method="vmap",
        device="cpu",
        dtype="float32",
        seconds=0.0,
    )


def test_steps_to_converge_is_the_step_from_which_a_run_stays_near_its_end():
    path = np.array([[0.0, 0.0], [1.0, 0.0], [1.05, 0.0], [0.7, 0.0], [1.0, 0.0], [1.02, 0.0]])
    positions = np.stack([path, path * 0 + 3.0, path])
    positions[2, 3:] = np.nan
    runs = _runs(positions, np.array([0, 10, 20, 30, 40, 50]), np.array([-1, -1, 25]), (3, 1))
    assert runs.steps_to_converge(0.1).tolist() == [40, 0, -1]
    assert runs.steps_to_converge(0.5).tolist() == [10, 0, -1]


def test_basin_map_of_known_end_points():
    ends = np.array([[1.0, 1.0], [1.05, 1.0], [-1.0, -1.0], [9.0, 9.0], [1.1, 0.95], [np.nan, np.nan]])
    positions = np.stack([np.zeros_like(ends), ends], axis=1)
    runs = _runs(positions, np.array([0, 100]), np.array([-1, -1, -1, -1, -1, 7]), (2, 3))
    basins = fs.basin_map(runs, tolerance=0.2)
    assert basins.attractor.tolist() == [[0, 0, 1], [2, 0, -1]]
    assert basins.sizes.tolist() == [3, 1, 1]
    assert np.allclose(basins.attractors[0], [1.05, 0.9833333333333334])
    assert basins.diverged.tolist() == [[False] * 3, [False, False, True]]
    assert basins.converge_step.tolist() == [[100, 100, 100], [100, 100, -1]]
    assert basins.final_loss.tolist() == [[1.0, 3.0, 5.0], [7.0, 9.0, 11.0]]
    assert basins.steps == 100 and basins.optimizer == "SGD(lr=0.01)"


def test_the_seed_map_is_symmetric_under_the_models_sign_flip():
    """``w2·tanh(w1·x)`` is unchanged by ``(w1, w2) -> (-w1, -w2)``, so SGD from mirrored
    starts ends at mirrored points, in mirrored attractors."""
    train, test = fs.train_test_split(*fs.piecewise_dataset(600), test_size=0.2, seed=0)
    axis = np.linspace(-1.5, 1.5, 5)
    runs = fs.train_many(fs.ANN(1, 1, 1), train, test, grid=(axis, axis), epochs=4)
    mirrored = runs.final.reshape(5, 5, 2)[::-1, ::-1].reshape(-1, 2)
    assert np.array_equal(mirrored, -runs.final)
    basins = fs.basin_map(runs, tolerance=0.3)
    located = basins.attractors[basins.attractor]
    assert np.allclose(located[::-1, ::-1], -located)


def test_disagreement_marks_starts_that_leave_their_geometric_basin():
    axis = np.linspace(-1.5, 1.5, 7)
    watershed = fs.Watershed(
        w1=axis,
        w2=axis[:3],
        basin=np.array([[0, 0, 1]] * 4 + [[0, 1, 1]] * 2 + [[-1, 1, 1]]),
        minima=np.zeros((2, 2)),
        minimum_loss=np.zeros(2),
        persistence=np.array([np.inf, 0.5]),
        merge_loss=np.array([np.inf, 0.5]),
        merged_into=np.array([-1, 0]),
    )
    attractor = np.array([[0, 0, 1]] * 4 + [[0, 0, 1], [0, 1, -1], [0, 1, 1]])
    basins = fs.BasinMap(
        axis,
        axis[:3],
        attractor,
        np.zeros((2, 2)),
        np.array([14, 6]),
        np.zeros((7, 3)),
        attractor,
        9,
        0.1,
        ("a", "b"),
        "-",
    )
    expected = np.zeros((7, 3), dtype=bool)
    expected[4, 1] = expected[5, 2] = True  # basin 1's usual fate is attractor 1
    assert fs.basin_disagreement(basins, watershed).tolist() == expected.tolist()
    merged = fs.basin_disagreement(basins, watershed, min_persistence=1.0)  # one geometric basin: attractor 0 rules
    assert merged.sum() == (attractor[watershed.basin >= 0] != 0).sum()


@pytest.mark.parametrize(
    ("change", "name"),
    [({"grid_w1": None}, "runs"), ({"group_names": ("SGD", "Adam")}, "runs"), ({}, "tolerance")],
)
def test_maps_need_one_optimizer_on_a_grid(change, name):
    from dataclasses import replace

    runs = replace(_runs(np.zeros((2, 2, 2)), np.array([0, 1]), np.array([-1, -1]), (1, 2)), **change)
    with pytest.raises(fs.FastsurfaceError, match=f"`{name}`"):
        fs.basin_map(runs, tolerance=-1.0 if name == "tolerance" else None)


def test_disagreement_needs_the_same_grid():
    runs = _runs(np.zeros((2, 2, 2)), np.array([0, 1]), np.array([-1, -1]), (1, 2))
    other = fs.watershed(fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(50), [0.0, 1.0], [0.0, 1.0]))
    with pytest.raises(fs.FastsurfaceError, match="`watershed`"):
        fs.basin_disagreement(fs.basin_map(runs), other)


def test_show_summarises_saved_runs(tmp_path, capsys):
    """``fastsurface show`` on a ``train_many`` file: runs, divergence, and the basin map's attractors."""
    data = fs.piecewise_dataset(256)
    grid = (fs.axis(-2, 2, 1.0), fs.axis(-2, 2, 1.0))
    lrs = [1e-2] * 15 + [1e6]  # one start diverges
    factories = [lambda p, lr=lr: torch.optim.SGD(p, lr=lr) for lr in lrs]
    runs = fs.train_many(
        fs.ANN(1, 1, 1),
        data,
        data,
        starts=np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 2),
        optimizer=factories,
        epochs=2,
    )
    assert runs.diverged.sum() == 1
    saved = fs.save(tmp_path / "runs.npz", trajectories=runs)
    assert main(["show", str(saved)]) == 0
    shown = capsys.readouterr().out
    assert "runs      16 runs x 3 records (epoch, 8 steps), full space" in shown
    assert "diverged  1 of 16 runs" in shown and "basins" not in shown  # no grid, two optimisers: no map
    mapped = fs.train_many(fs.ANN(1, 1, 1), data, data, grid=grid, epochs=2)
    basins = fs.basin_map(mapped)
    assert main(["show", str(fs.save(tmp_path / "map.npz", trajectories=mapped))]) == 0
    shown = capsys.readouterr().out
    (w1, w2), size = basins.attractors[0], basins.sizes[0]
    assert "diverged  0 of 16 runs" in shown
    assert f"basins    4 x 4 start grid, {len(basins.sizes)} attractors (within {basins.tolerance:.3g}): " in shown
    assert f"({w1:.4g}, {w2:.4g}) {size:,} starts" in shown
