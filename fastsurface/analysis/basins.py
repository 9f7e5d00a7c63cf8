"""Basin maps: where an optimiser started from every grid point ends up, and how that
compares with the surface's geometric basins (``watershed``).

Attractors are found by single linkage on the runs' end points: two runs share an
attractor when a chain of end points joins them with every link at most ``tolerance``
long (Euclidean, plane coordinates). Points are hashed into square cells of side
``tolerance / 2`` (any two points of a cell are linked), and cells up to two apart are
linked when their closest points are, so the clustering is exact, not a cell
approximation.
"""

from __future__ import annotations

import math

import numpy as np

from fastsurface.errors import FastsurfaceError
from fastsurface.results import BasinMap, Trajectories, Watershed

# The default tolerance, as a share of the start grid's larger span.
DEFAULT_TOLERANCE_SHARE = 0.05
# Cell offsets (in cells of side tolerance / 2) at which two end points can be linked;
# half of them, so that each pair of cells is looked at once.
_CELL_OFFSETS = [(di, dj) for di in range(0, 3) for dj in range(-2, 3) if (di, dj) > (0, 0)]
# Point pairs compared at once when two cells are tested for a link.
_PAIRS_AT_ONCE = 2**20


def basin_map(runs: Trajectories, tolerance: float | None = None) -> BasinMap:
    """Each start's fate: its attractor, final loss and settling step, or divergence.

    Args:
        runs: ``train_many`` runs from a grid (``grid=``) with one optimiser; split
            ``compare_optimizers``' results by name first.
        tolerance: linkage distance of the attractors and band of the settling step
            (``Trajectories.steps_to_converge``), plane coordinates; by default 5 % of
            the start grid's larger span.

    >>> import fastsurface as fs
    >>> data = fs.piecewise_dataset(256)
    >>> runs = fs.train_many(fs.ANN(1, 1, 1), data, data, grid=(fs.axis(-2, 2, 1.0), fs.axis(-2, 2, 1.0)))
    >>> basins = basin_map(runs)
    >>> basins.attractor.shape, round(basins.tolerance, 6), basins.steps
    ((4, 4), 0.15, 100)
    """
    if not isinstance(runs, Trajectories):
        raise FastsurfaceError(f"`runs` must be fastsurface Trajectories (train_many), got {type(runs).__name__}")
    if runs.grid_w1 is None or runs.grid_w2 is None:
        raise FastsurfaceError("`runs` must start from a grid (train_many(..., grid=(w1, w2))) to make a map")
    if len(runs.group_names) != 1:
        raise FastsurfaceError(
            f"`runs` must use one optimiser for a map, got {len(runs.group_names)}: {', '.join(runs.group_names)}"
        )
    if tolerance is None:
        spans = [float(np.ptp(runs.grid_w1)), float(np.ptp(runs.grid_w2))]
        tolerance = DEFAULT_TOLERANCE_SHARE * (max(spans) or 1.0)
    if not (isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool) and 0 < tolerance < math.inf):
        raise FastsurfaceError(f"`tolerance` must be a finite number > 0, got {tolerance!r}")
    shape = (len(runs.grid_w1), len(runs.grid_w2))
    alive = ~runs.diverged
    attractor = np.full(runs.count, -1, dtype=np.int64)
    attractor[alive] = single_linkage(runs.final[alive], tolerance)
    sizes = np.bincount(attractor[alive])
    locations = np.array([runs.final[attractor == label].mean(axis=0) for label in range(len(sizes))]).reshape(-1, 2)
    return BasinMap(
        w1=runs.grid_w1,
        w2=runs.grid_w2,
        attractor=attractor.reshape(shape),
        attractors=locations,
        sizes=sizes.astype(np.int64),
        final_loss=runs.final_loss.reshape(shape),
        converge_step=runs.steps_to_converge(tolerance).reshape(shape),
        steps=int(runs.step[-1]),
        tolerance=float(tolerance),
        labels=runs.labels,
        optimizer=runs.group_names[0],
    )


def single_linkage(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Single-linkage clusters of ``points`` ``(N, 2)`` at ``tolerance``: labels ``(N,)``,
    0 the largest cluster, then by size (ties: by the first member's index)."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    cells, cell_of = np.unique(np.floor(points / (tolerance / 2)).astype(np.int64), axis=0, return_inverse=True)
    cell_of = cell_of.reshape(-1)
    order = np.argsort(cell_of, kind="stable")
    bounds = np.searchsorted(cell_of[order], np.arange(len(cells) + 1))
    members = [points[order[bounds[c] : bounds[c + 1]]] for c in range(len(cells))]
    position = {tuple(cell): index for index, cell in enumerate(cells.tolist())}
    parent = np.arange(len(cells))

    def root(cell: int) -> int:
        while parent[cell] != cell:
            parent[cell] = parent[parent[cell]]
            cell = int(parent[cell])
        return cell

    for index, (i, j) in enumerate(cells.tolist()):
        for di, dj in _CELL_OFFSETS:
            other = position.get((i + di, j + dj))
            if other is None or root(index) == root(other):
                continue
            if _closest_within(members[index], members[other], tolerance):
                parent[root(other)] = root(index)
    cluster = np.array([root(c) for c in range(len(cells))])[cell_of]
    return _by_size(cluster)


def _closest_within(first: np.ndarray, second: np.ndarray, tolerance: float) -> bool:
    """Whether some point of ``first`` lies within ``tolerance`` of some point of ``second``."""
    step = max(1, _PAIRS_AT_ONCE // len(second))
    for start in range(0, len(first), step):
        gaps = first[start : start + step, None, :] - second[None, :, :]
        if (np.hypot(gaps[..., 0], gaps[..., 1]) <= tolerance).any():  # no square to overflow
            return True
    return False


def _by_size(cluster: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0, 1, ... by size, largest first (ties: first member)."""
    ids, first, counts = np.unique(cluster, return_index=True, return_counts=True)
    ranking = np.lexsort((first, -counts))
    renumber = np.empty(len(ids), dtype=np.int64)
    renumber[ranking] = np.arange(len(ids))
    return renumber[np.searchsorted(ids, cluster)]


def basin_disagreement(basins: BasinMap, watershed: Watershed, min_persistence: float = 0.0) -> np.ndarray:
    """Starts whose fate differs from that of most starts in their geometric basin.

    Args:
        basins: a basin map.
        watershed: the watershed of a surface on the same grid (``loss_surface`` on the
            basin map's axes).
        min_persistence: merge geometric basins shallower than this first
            (``Watershed.merged``), so that noise does not count as a basin.

    Returns:
        bool, shape ``(n1, n2)``: True where the start's attractor (divergence counts as
        one fate) is not the most common one among the starts of its geometric basin
        (ties: the lowest label); False outside every basin (non-finite losses).
    """
    if not isinstance(basins, BasinMap):
        raise FastsurfaceError(f"`basins` must be a BasinMap (basin_map), got {type(basins).__name__}")
    if not isinstance(watershed, Watershed):
        raise FastsurfaceError(f"`watershed` must be a Watershed (watershed), got {type(watershed).__name__}")
    real = isinstance(min_persistence, (int, float)) and not isinstance(min_persistence, bool)
    if not (real and 0 <= min_persistence < math.inf):
        raise FastsurfaceError(f"`min_persistence` must be a finite number >= 0, got {min_persistence!r:.100}")
    if not (np.array_equal(basins.w1, watershed.w1) and np.array_equal(basins.w2, watershed.w2)):
        raise FastsurfaceError("`watershed` must be of a surface on the basin map's grid (the same w1 and w2 axes)")
    geometric = watershed.merged(min_persistence) if min_persistence > 0 else watershed.basin
    inside = geometric >= 0
    pairs, counts = np.unique(np.stack([geometric[inside], basins.attractor[inside]]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -counts, pairs[0]))  # per basin: most common fate first
    first = np.unique(pairs[0][order], return_index=True)[1]
    majority = np.full(max(int(geometric.max()) + 1, 1), -2, dtype=np.int64)
    majority[pairs[0][order][first]] = pairs[1][order][first]
    return inside & (majority[np.maximum(geometric, 0)] != basins.attractor)
