"""fastsurface: loss surfaces of neural networks over a grid of their weights, fast.

>>> import fastsurface as fs
>>> (train, test) = fs.train_test_split(*fs.piecewise_dataset(500))
>>> surface = fs.loss_surface(fs.ANN(1, 1, 1), test, fs.axis(-2, 2, 0.5), fs.axis(-2, 2, 0.5))
>>> surface.loss.shape
(8, 8)
"""

from fastsurface._version import __version__ as __version__
from fastsurface.analysis.basins import basin_disagreement, basin_map
from fastsurface.analysis.critical import critical_points, critical_points_of
from fastsurface.analysis.hessian import HessianPlane, hessian_plane
from fastsurface.analysis.lines import Line, loss_line
from fastsurface.analysis.many import compare_optimizers, train_many
from fastsurface.analysis.metrics import accuracy, metric_surfaces
from fastsurface.analysis.paths import ParameterPath, ProjectedPath, project_path, record_path
from fastsurface.analysis.refine import refine, trajectory_window, window_around
from fastsurface.analysis.training import train_sgd
from fastsurface.analysis.watershed import watershed
from fastsurface.engine.axes import axis
from fastsurface.engine.evaluate import Evaluation, evaluate_points, loss_surface
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.directions import (
    interpolation_line,
    interpolation_plane,
    line_plane,
    random_direction,
    random_line,
    random_plane,
)
from fastsurface.planes.pca import PrincipalPlane, pca_plane
from fastsurface.planes.plane import Plane, default_plane, entry_plane
from fastsurface.results import BasinMap, CriticalPoint, Surface, Trajectories, Trajectory, Watershed
from fastsurface.runs.checkpoint import Checkpoint, resumable_loss_surface
from fastsurface.runs.distributed import ShardedSurface, sharded_loss_surface
from fastsurface.runs.storage import Saved, load, save
from fastsurface.seed.data import piecewise_dataset, piecewise_target, train_test_split
from fastsurface.seed.model import ANN
from fastsurface.seed.naive import naive_loss_surface
from fastsurface.views.basins import plot_basins
from fastsurface.views.export import write_figure
from fastsurface.views.planar import plot_animation, plot_contour
from fastsurface.views.surface import plot_surface

__all__ = [
    "ANN",
    "BasinMap",
    "Checkpoint",
    "CriticalPoint",
    "Evaluation",
    "FastsurfaceError",
    "HessianPlane",
    "Line",
    "ParameterPath",
    "Plane",
    "PrincipalPlane",
    "ProjectedPath",
    "Saved",
    "ShardedSurface",
    "Surface",
    "Trajectories",
    "Trajectory",
    "Watershed",
    "accuracy",
    "axis",
    "basin_disagreement",
    "basin_map",
    "compare_optimizers",
    "critical_points",
    "critical_points_of",
    "default_plane",
    "entry_plane",
    "evaluate_points",
    "hessian_plane",
    "interpolation_line",
    "interpolation_plane",
    "line_plane",
    "load",
    "loss_line",
    "loss_surface",
    "metric_surfaces",
    "naive_loss_surface",
    "pca_plane",
    "piecewise_dataset",
    "piecewise_target",
    "plot_animation",
    "plot_basins",
    "plot_contour",
    "plot_surface",
    "project_path",
    "random_direction",
    "random_line",
    "random_plane",
    "record_path",
    "refine",
    "resumable_loss_surface",
    "save",
    "sharded_loss_surface",
    "train_many",
    "train_sgd",
    "train_test_split",
    "trajectory_window",
    "watershed",
    "window_around",
    "write_figure",
]
