"""fastsurface: loss surfaces of neural networks over a grid of their weights, fast.

>>> import fastsurface as fs
>>> (train, test) = fs.train_test_split(*fs.piecewise_dataset(500))
>>> surface = fs.loss_surface(fs.ANN(1, 1, 1), test, fs.axis(-2, 2, 0.5), fs.axis(-2, 2, 0.5))
>>> surface.loss.shape
(8, 8)

Importing the package is light: each public name loads its module on first use (PEP 562),
so ``fastsurface --help`` does not import the engine, and Ctrl-C during start-up reaches
the command line's handler.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastsurface._version import __version__ as __version__

# Every public name and the module that defines it.
_PUBLIC = {
    "accuracy": "fastsurface.analysis.metrics",
    "ANN": "fastsurface.seed.model",
    "axis": "fastsurface.engine.axes",
    "basin_disagreement": "fastsurface.analysis.basins",
    "basin_map": "fastsurface.analysis.basins",
    "BasinMap": "fastsurface.results",
    "Checkpoint": "fastsurface.runs.checkpoint",
    "compare_optimizers": "fastsurface.analysis.many",
    "critical_points": "fastsurface.analysis.critical",
    "critical_points_of": "fastsurface.analysis.critical",
    "CriticalPoint": "fastsurface.results",
    "DataDescription": "fastsurface.results",
    "default_plane": "fastsurface.planes.plane",
    "entry_plane": "fastsurface.planes.plane",
    "evaluate_points": "fastsurface.engine.evaluate",
    "Evaluation": "fastsurface.engine.evaluate",
    "Evaluator": "fastsurface.engine.evaluate",
    "explore": "fastsurface.explorer",
    "Explorer": "fastsurface.explorer",
    "FastsurfaceError": "fastsurface.errors",
    "fit_window": "fastsurface.analysis.refine",
    "hessian_plane": "fastsurface.analysis.hessian",
    "HessianPlane": "fastsurface.analysis.hessian",
    "interpolation_line": "fastsurface.planes.directions",
    "interpolation_plane": "fastsurface.planes.directions",
    "Line": "fastsurface.analysis.lines",
    "line_plane": "fastsurface.planes.directions",
    "load": "fastsurface.runs.storage",
    "load_hdf5": "fastsurface.runs.interchange",
    "loss_line": "fastsurface.analysis.lines",
    "loss_surface": "fastsurface.engine.evaluate",
    "metric_surfaces": "fastsurface.analysis.metrics",
    "naive_loss_surface": "fastsurface.seed.naive",
    "ParameterPath": "fastsurface.analysis.paths",
    "pca_plane": "fastsurface.planes.pca",
    "per_class_surfaces": "fastsurface.analysis.metrics",
    "piecewise_dataset": "fastsurface.seed.data",
    "piecewise_target": "fastsurface.seed.data",
    "Plane": "fastsurface.planes.plane",
    "plot_animation": "fastsurface.views.planar",
    "plot_basins": "fastsurface.views.basins",
    "plot_contour": "fastsurface.views.planar",
    "plot_surface": "fastsurface.views.surface",
    "PrincipalPlane": "fastsurface.planes.pca",
    "project_path": "fastsurface.analysis.paths",
    "ProjectedPath": "fastsurface.analysis.paths",
    "random_direction": "fastsurface.planes.directions",
    "random_line": "fastsurface.planes.directions",
    "random_plane": "fastsurface.planes.directions",
    "record_path": "fastsurface.analysis.paths",
    "refine": "fastsurface.analysis.refine",
    "resumable_loss_surface": "fastsurface.runs.checkpoint",
    "save": "fastsurface.runs.storage",
    "save_hdf5": "fastsurface.runs.interchange",
    "save_vtk": "fastsurface.runs.interchange",
    "Saved": "fastsurface.runs.storage",
    "sharded_loss_surface": "fastsurface.runs.distributed",
    "ShardedSurface": "fastsurface.runs.distributed",
    "Surface": "fastsurface.results",
    "train_many": "fastsurface.analysis.many",
    "train_sgd": "fastsurface.analysis.training",
    "train_test_split": "fastsurface.seed.data",
    "train_test_surfaces": "fastsurface.analysis.metrics",
    "TrainTest": "fastsurface.results",
    "Trajectories": "fastsurface.results",
    "Trajectory": "fastsurface.results",
    "trajectory_window": "fastsurface.analysis.refine",
    "watershed": "fastsurface.analysis.watershed",
    "Watershed": "fastsurface.results",
    "window_around": "fastsurface.analysis.refine",
    "write_figure": "fastsurface.views.export",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fastsurface' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
