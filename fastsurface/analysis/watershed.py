"""Geometric basins of a surface: the grid's watershed and the persistence of its minima.

**Watershed.** Each grid point flows to the neighbour (of its eight) with the steepest
descent, ``(loss(p) - loss(q)) / ‖p - q‖`` in plane coordinates, among those strictly
lower; ties go to the first in the order up-left, up, up-right, left, right, down-left,
down, down-right (rows follow ``w1``). A point with no lower neighbour lies on a plateau:
the connected points of exactly its loss. A plateau with a point that has a lower
neighbour drains through its nearest such point (in steps on the plateau); one without
is a minimum, all of it one basin. Every point is labelled by the minimum it reaches.
Non-finite losses (NaN, ±inf) belong to no basin (label ``-1``) and are never crossed.

**Persistence.** The sublevel sets ``{loss <= t}`` of the grid (8-connected) gain a
component at each minimum and merge components at passes. When two merge, the one with
the higher minimum dies (the elder rule; equal minima: the later in label order), at the
pass's loss: its persistence is that loss minus its minimum. The lowest minimum of each
connected finite region never dies (``inf``). A basin's merge with its neighbours
happens at the lowest pass between them, ``max(loss(p), loss(q))`` over adjacent points
``p``, ``q`` on either side, so the merge tree is found by union-find over the basins'
passes in increasing order (Kruskal). Low persistence marks a basin that noise (a
ripple of the data, a coarse grid) could make or unmake; ``Watershed.merged`` removes
those below a threshold.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from fastsurface.errors import FastsurfaceError
from fastsurface.results import Surface, Watershed

# The eight neighbours, in the tie-breaking order (row offset along w1, column along w2).
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# Half of them: every adjacent pair once.
_PAIRS = ((0, 1), (1, -1), (1, 0), (1, 1))


def watershed(surface: Surface) -> Watershed:
    """The steepest-descent basins of ``surface`` and the persistence of their minima.

    Args:
        surface: any surface (uneven axes too, as ``refine`` makes them).

    Returns:
        A ``Watershed``; basins are labelled by their minimum's loss, lowest first.

    >>> import numpy as np, torch, fastsurface as fs
    >>> w1 = w2 = np.linspace(-1.5, 1.5, 31)
    >>> loss = (w1[:, None] ** 2 - 1) ** 2 + w2[None, :] ** 2 + 0.1 * w1[:, None]
    >>> found = watershed(fs.Surface(w1, w2, torch.from_numpy(loss), ("w1", "w2"), "mse", "mean",
    ...                               "cpu", "float64", 1, 1, 0.0, "vmap", 1))
    >>> found.minima.round(2).tolist(), found.persistence.round(2).tolist()
    ([[-1.0, 0.0], [1.0, 0.0]], [inf, 0.9])
    """
    if not isinstance(surface, Surface):
        raise FastsurfaceError(f"`surface` must be a fastsurface Surface, got {type(surface).__name__}")
    loss = np.asarray(surface.loss, dtype=np.float64)
    flow = _steepest_descent(loss, surface.w1, surface.w2)
    _drain_plateaus(loss, flow)
    roots = _roots(flow)
    finite = np.isfinite(loss).reshape(-1)
    minima_index = np.unique(roots[finite])
    flat_loss = loss.reshape(-1)
    order = np.lexsort((minima_index, flat_loss[minima_index]))  # by loss, then row-major position
    minima_index = minima_index[order]
    label_of = np.full(loss.size, -1, dtype=np.int64)
    label_of[minima_index] = np.arange(len(minima_index))
    basin = np.where(finite, label_of[np.where(finite, roots, 0)], -1).reshape(loss.shape)
    minimum_loss = flat_loss[minima_index]
    merge_loss, merged_into = _merge_tree(loss, basin, len(minima_index))
    rows, columns = np.unravel_index(minima_index, loss.shape)
    return Watershed(
        w1=surface.w1,
        w2=surface.w2,
        basin=basin,
        minima=np.stack([surface.w1[rows], surface.w2[columns]], axis=1).astype(np.float64).reshape(-1, 2),
        minimum_loss=minimum_loss,
        persistence=merge_loss - minimum_loss,
        merge_loss=merge_loss,
        merged_into=merged_into,
    )


def _steepest_descent(loss: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """Each point's steepest strictly lower neighbour (flat index), itself where none is
    lower, ``-1`` at non-finite losses; shape ``(n1 * n2,)``."""
    n1, n2 = loss.shape
    value = np.where(np.isfinite(loss), loss, np.inf)
    padded = np.pad(value, 1, constant_values=np.inf)
    rows = np.pad(np.asarray(w1, dtype=np.float64), 1, constant_values=np.nan)
    columns = np.pad(np.asarray(w2, dtype=np.float64), 1, constant_values=np.nan)
    index = np.arange(n1 * n2).reshape(n1, n2)
    target, steepest = index.copy(), np.zeros((n1, n2))
    with np.errstate(invalid="ignore"):  # inf - inf at non-finite points, NaN distances off the grid
        for di, dj in NEIGHBOURS:
            neighbour = padded[1 + di : 1 + di + n1, 1 + dj : 1 + dj + n2]
            distance = np.hypot(
                (rows[1 + di : 1 + di + n1] - rows[1 : 1 + n1])[:, None],
                (columns[1 + dj : 1 + dj + n2] - columns[1 : 1 + n2])[None, :],
            )
            slope = (value - neighbour) / distance
            steeper = slope > steepest
            steepest = np.where(steeper, slope, steepest)
            target = np.where(steeper, index + di * n2 + dj, target)
    return np.where(np.isfinite(loss), target, -1).reshape(-1)


def _drain_plateaus(loss: np.ndarray, flow: np.ndarray) -> None:
    """Point the flat points (no lower neighbour) of ``flow`` across their plateau: to
    the nearest exit where the plateau has one, else all to its first point (a minimum)."""
    n1, n2 = loss.shape
    flat_loss = loss.reshape(-1)
    flat = np.flatnonzero(flow == np.arange(flow.size))
    done = np.zeros(flow.size, dtype=bool)
    for start in flat:
        if done[start]:
            continue
        plateau = _plateau(int(start), flat_loss, n1, n2)
        done[plateau] = True
        exits = [p for p in plateau if flow[p] != p]
        if not exits:
            flow[plateau] = min(plateau)
            continue
        queue, reached = deque(exits), set(exits)
        while queue:  # breadth first from the exits: each point flows back along its discovery
            point = queue.popleft()
            for neighbour in _neighbours(point, n1, n2):
                if neighbour not in reached and flat_loss[neighbour] == flat_loss[point]:
                    reached.add(neighbour)
                    flow[neighbour] = point
                    queue.append(neighbour)


def _plateau(start: int, flat_loss: np.ndarray, n1: int, n2: int) -> list[int]:
    """The points connected to ``start`` through neighbours of exactly its loss."""
    found, queue = {start}, deque([start])
    while queue:
        point = queue.popleft()
        for neighbour in _neighbours(point, n1, n2):
            if neighbour not in found and flat_loss[neighbour] == flat_loss[start]:
                found.add(neighbour)
                queue.append(neighbour)
    return sorted(found)


def _neighbours(point: int, n1: int, n2: int) -> list[int]:
    i, j = divmod(point, n2)
    return [(i + di) * n2 + j + dj for di, dj in NEIGHBOURS if 0 <= i + di < n1 and 0 <= j + dj < n2]


def _roots(flow: np.ndarray) -> np.ndarray:
    """Where each point's flow ends (pointer jumping); non-finite points keep ``-1``."""
    roots = np.where(flow >= 0, flow, np.arange(flow.size))
    while True:
        following = roots[roots]
        if np.array_equal(following, roots):
            return np.where(flow >= 0, roots, -1)
        roots = following


def _merge_tree(loss: np.ndarray, basin: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(merge_loss, merged_into)`` of each basin by the elder rule over its lowest passes."""
    passes = _lowest_passes(loss, basin)
    parent = np.arange(count)

    def root(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = int(parent[label])
        return label

    merge_loss = np.full(count, np.inf)
    merged_into = np.full(count, -1, dtype=np.int64)
    for a, b, height in passes:
        first, second = root(int(a)), root(int(b))
        if first == second:
            continue
        elder, younger = min(first, second), max(first, second)  # labels are ordered by minimum loss
        parent[younger] = elder
        merge_loss[younger], merged_into[younger] = height, elder
    return merge_loss, merged_into


def _lowest_passes(loss: np.ndarray, basin: np.ndarray) -> list[tuple[int, int, float]]:
    """For each pair of adjacent basins, ``(a, b, height)`` of its lowest pass, ``a < b``,
    sorted by height (then labels)."""
    n1, n2 = basin.shape
    found = []
    for di, dj in _PAIRS:
        rows = slice(max(0, -di), n1 - max(0, di))
        here = (rows, slice(max(0, -dj), n2 - max(0, dj)))
        there = (slice(rows.start + di, rows.stop + di), slice(here[1].start + dj, here[1].stop + dj))
        a, b = basin[here].reshape(-1), basin[there].reshape(-1)
        height = np.maximum(loss[here], loss[there]).reshape(-1)
        crossing = (a >= 0) & (b >= 0) & (a != b)
        found.append(np.stack([np.minimum(a, b)[crossing], np.maximum(a, b)[crossing], height[crossing]], axis=1))
    edges = np.concatenate(found) if found else np.zeros((0, 3))
    edges = edges[np.lexsort((edges[:, 2], edges[:, 1], edges[:, 0]))]
    first = np.ones(len(edges), dtype=bool)
    first[1:] = (edges[1:, :2] != edges[:-1, :2]).any(axis=1)  # the lowest pass of each pair
    lowest = edges[first]
    lowest = lowest[np.lexsort((lowest[:, 1], lowest[:, 0], lowest[:, 2]))]
    return [(int(a), int(b), float(h)) for a, b, h in lowest]
