"""The plane of a recorded parameter path's top-2 principal components (Li et al. 2018, §7)."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np
import torch

from fastsurface._support.values import real_values
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane


class PrincipalPlane(NamedTuple):
    """The plane of a trajectory's top-2 principal components.

    Attributes:
        plane: origin at the chosen trajectory point; ``d₁``, ``d₂`` unit vectors over all
            parameters (coordinates are distances in parameter space).
        explained_variance_ratio: share of the trajectory's variance along ``d₁`` and
            ``d₂``, float64, shape ``(2,)``.
    """

    plane: Plane
    explained_variance_ratio: np.ndarray


def pca_plane(path: Any, origin: int = -1) -> PrincipalPlane:
    """The top-2 principal components of recorded parameter paths (Li et al. 2018, §7).

    The rows ``θ_i`` of ``path.vectors`` are centred on their mean and decomposed by SVD;
    the two leading right singular vectors are the directions. The plane passes through
    ``θ_origin`` (the final point by default, as Li et al. do).

    Args:
        path: a ``fastsurface.analysis.paths.ParameterPath`` with at least 3 points, or a
            list of them (runs of one architecture, e.g. from several seeds or optimisers):
            their points are taken together, in order, as one set of rows.
        origin: index of the point the plane passes through, among all the points (by
            default the last point of the last path).
    """
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise FastsurfaceError("`path` must be a ParameterPath or a non-empty list of them, got an empty list")
    for number, each in enumerate(paths):
        if not hasattr(each, "vectors") or not callable(getattr(each, "unflatten", None)):
            where = f" (entry {number})" if isinstance(path, (list, tuple)) else ""
            raise FastsurfaceError(
                f"`path` must be a ParameterPath (see record_path) or a list of them, got {type(each).__name__}{where}"
            )
        if (each.names, each.shapes) != (paths[0].names, paths[0].shapes):
            raise FastsurfaceError(
                f"`path` entries must share one architecture (parameter names and shapes); entry {number} differs "
                "from entry 0"
            )
    vectors = torch.from_numpy(
        np.concatenate([real_values("path", each.vectors, "a ParameterPath's parameter vectors") for each in paths])
    )
    if vectors.ndim != 2 or len(vectors) < 3:
        raise FastsurfaceError(f"`path` must hold at least 3 parameter vectors, got shape {tuple(vectors.shape)}")
    if (
        not isinstance(origin, numbers.Integral)
        or isinstance(origin, bool)
        or not -len(vectors) <= origin < len(vectors)
    ):
        raise FastsurfaceError(f"`origin` must index one of the {len(vectors)} path points, got {origin}")
    if not bool(torch.isfinite(vectors).all()):
        raise FastsurfaceError("`path` must hold finite parameter vectors, got NaN or inf (a diverged run?)")
    centred = vectors - vectors.mean(dim=0)
    _, singular, right = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.square()
    if float(variance[1]) <= 0:
        raise FastsurfaceError(
            "`path` must move in at least two directions, got a path of rank < 2: its principal plane is undefined"
        )
    ratio = (variance[:2] / variance.sum()).numpy()
    unflatten = paths[0].unflatten
    return PrincipalPlane(
        Plane(unflatten(vectors[origin]), unflatten(right[0]), unflatten(right[1]), ("pc1", "pc2")),
        ratio,
    )
