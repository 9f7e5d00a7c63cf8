"""Hostile inputs, by class (issue: Reliability II): every public function answers a bad
value with one ``FastsurfaceError`` naming the argument, before heavy work, never another
exception. A property-based sweep replaces each argument of each public function in turn
with hostile values; the catalogue below pins each class with its cases."""

from __future__ import annotations

import contextlib
import inspect
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fastsurface as fs

DATA = fs.piecewise_dataset(40)
GRID = (fs.axis(-1, 1, 0.5), fs.axis(-1, 1, 0.5))


def _model():
    return fs.ANN(1, 1, 1)


def _surface():
    return fs.loss_surface(_model(), DATA, *GRID)


def _trajectory():
    return fs.train_sgd(_model(), DATA, DATA, epochs=1)


def _path():
    return fs.record_path(_model(), DATA, epochs=3)


def _runs():
    return fs.train_many(_model(), DATA, DATA, grid=GRID, epochs=1, batch_size=20)


def _shifted(by):
    model = _model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(by)
    return model


def _classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))


# A small three-class problem: scores (S, 3) of 2 inputs, one class index per sample.
CLASSES = (np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32), np.arange(30) % 3)


_FOLDER = Path(tempfile.mkdtemp(prefix="fastsurface-hostile-"))

# Each public function with a valid call: positional arguments and keywords, by name.
CALLS = {
    "loss_surface": (fs.loss_surface, lambda: {"model": _model(), "data": DATA, "w1": GRID[0], "w2": GRID[1]}),
    "evaluate_points": (
        fs.evaluate_points,
        lambda: {"model": _model(), "plane": fs.default_plane(_model()), "data": DATA, "points": [[0.0, 1.0]]},
    ),
    "train_sgd": (fs.train_sgd, lambda: {"model": _model(), "train": DATA, "test": DATA, "epochs": 1}),
    "record_path": (fs.record_path, lambda: {"model": _model(), "train": DATA, "epochs": 1}),
    "refine": (
        fs.refine,
        lambda: {"surface": _surface(), "model": _model(), "data": DATA, "window": ((0, 0.5), (0, 0.5)), "step": 0.25},
    ),
    "critical_points": (fs.critical_points, lambda: {"surface": _surface(), "model": _model(), "data": DATA}),
    "metric_surfaces": (
        fs.metric_surfaces,
        lambda: {"model": _model(), "data": DATA, "w1": GRID[0], "w2": GRID[1], "metrics": {"mse": "mse"}},
    ),
    "loss_line": (
        fs.loss_line,
        lambda: {"model": _model(), "data": DATA, "t": [0.0, 1.0], "line": fs.random_line(_model())},
    ),
    "random_plane": (fs.random_plane, lambda: {"model": _model(), "seed": 0}),
    "pca_plane": (fs.pca_plane, lambda: {"path": _path()}),
    "hessian_plane": (fs.hessian_plane, lambda: {"model": _model(), "data": DATA, "iterations": 2}),
    "entry_plane": (
        fs.entry_plane,
        lambda: {"model": _model(), "first": "net.Layer_1.weight[0, 0]", "second": "net.Layer_2.weight[0, 0]"},
    ),
    "axis": (fs.axis, lambda: {"start": -1.0, "stop": 1.0, "step": 0.5}),
    "piecewise_dataset": (fs.piecewise_dataset, lambda: {"n": 10, "seed": 0}),
    "train_test_split": (fs.train_test_split, lambda: {"x": DATA[0], "y": DATA[1], "test_size": 0.2, "seed": 0}),
    "save": (fs.save, lambda: {"path": _FOLDER / "s.npz", "surface": _surface()}),
    "load": (fs.load, lambda: {"path": fs.save(_FOLDER / "l.npz", surface=_surface())}),
    "plot_surface": (fs.plot_surface, lambda: {"surface": _surface(), "trajectory": _trajectory()}),
    "plot_contour": (fs.plot_contour, lambda: {"surface": _surface(), "trajectories": _trajectory()}),
    "plot_animation": (fs.plot_animation, lambda: {"surface": _surface(), "trajectory": _trajectory()}),
    "window_around": (fs.window_around, lambda: {"center": (0.0, 0.0), "radius": 0.5}),
    "per_class_surfaces": (
        fs.per_class_surfaces,
        lambda: {"model": _classifier(), "data": CLASSES, "w1": GRID[0], "w2": GRID[1]},
    ),
    "train_test_surfaces": (
        fs.train_test_surfaces,
        lambda: {"model": _model(), "train": DATA, "test": DATA, "w1": GRID[0], "w2": GRID[1]},
    ),
    "save_hdf5": (fs.save_hdf5, lambda: {"path": _FOLDER / "s.h5", "surfaces": _surface(), "name": "train_loss"}),
    "load_hdf5": (fs.load_hdf5, lambda: {"path": fs.save_hdf5(_FOLDER / "l.h5", _surface()), "name": "train_loss"}),
    "save_vtk": (fs.save_vtk, lambda: {"path": _FOLDER / "s.vts", "surface": _surface()}),
    "train_many": (
        fs.train_many,
        lambda: {"model": _model(), "train": DATA, "test": DATA, "grid": GRID, "epochs": 1, "batch_size": 20},
    ),
    "basin_map": (fs.basin_map, lambda: {"runs": _runs(), "tolerance": 0.1}),
    "watershed": (fs.watershed, lambda: {"surface": _surface()}),
    "plot_basins": (fs.plot_basins, lambda: {"basins": fs.basin_map(_runs()), "surface": _surface()}),
    "project_path": (
        fs.project_path,
        lambda: {"model": _model(), "plane": fs.default_plane(_model()), "path": _path(), "data": DATA},
    ),
    "write_figure": (
        fs.write_figure,
        lambda: {"figure": fs.plot_contour(_surface()), "path": _FOLDER / "f.html", "plotlyjs": "cdn"},
    ),
    "interpolation_plane": (
        fs.interpolation_plane,
        lambda: {"origin": _model(), "first": _shifted(1.0), "second": _shifted(-1.0)},
    ),
    "interpolation_line": (fs.interpolation_line, lambda: {"start": _model(), "end": _shifted(1.0)}),
    "random_line": (fs.random_line, lambda: {"model": _model(), "seed": 0}),
    "random_direction": (fs.random_direction, lambda: {"model": _model(), "generator": torch.Generator()}),
    "basin_disagreement": (
        fs.basin_disagreement,
        lambda: {"basins": fs.basin_map(_runs()), "watershed": fs.watershed(_surface())},
    ),
    "trajectory_window": (fs.trajectory_window, lambda: {"trajectory": _trajectory(), "margin": 0.1}),
    "default_plane": (fs.default_plane, lambda: {"model": _model()}),
    "naive_loss_surface": (
        fs.naive_loss_surface,
        lambda: {"model": _model(), "data": DATA, "w1": GRID[0][:2], "w2": GRID[1][:2]},
    ),
    "piecewise_target": (fs.piecewise_target, lambda: {"x": DATA[0]}),
    "compare_optimizers": (
        fs.compare_optimizers,
        lambda: {
            "model": _model(),
            "train": DATA,
            "test": DATA,
            "optimizers": {"sgd": lambda p: torch.optim.SGD(p, lr=0.01)},
            "grid": GRID,
            "epochs": 1,
        },
    ),
    "line_plane": (
        fs.line_plane,
        lambda: {"origin": fs.default_plane(_model()).origin, "direction": fs.default_plane(_model()).first},
    ),
    "critical_points_of": (
        fs.critical_points_of,
        lambda: {"function": lambda a, b: (a - 0.1) ** 2 + (b + 0.2) ** 2, "w1": GRID[0], "w2": GRID[1]},
    ),
    "resumable_loss_surface": (
        fs.resumable_loss_surface,
        lambda: {"model": _model(), "data": DATA, "w1": GRID[0], "w2": GRID[1], "checkpoint_dir": _FOLDER / "r"},
    ),
    "sharded_loss_surface": (
        fs.sharded_loss_surface,
        lambda: {"model": _model(), "data": DATA, "w1": GRID[0], "w2": GRID[1]},
    ),
    "fit_window": (fs.fit_window, lambda: {"w1": GRID[0], "w2": GRID[1], "trajectory": _trajectory(), "step": 0.5}),
}

HOSTILE = st.sampled_from(
    [
        None,
        "",
        "no",
        b"bytes",
        -1,
        0,
        2**70,
        1.5,
        float("nan"),
        float("inf"),
        -1e300,
        1e39,
        True,
        1 + 2j,
        np.int64(-3),
        np.array([1 + 1j, 2 + 0j]),
        np.array([True, False]),
        np.array(["a", "b"]),
        np.zeros((2, 2, 2)),
        [],
        [None],
        {},
        {"a": 1},
        object(),
        torch.zeros(2, device="meta"),
        torch.tensor([1.0, float("nan")]),
        torch.tensor([0.0, 1.0], dtype=torch.bfloat16),
        torch.eye(2).to_sparse(),
        10**400,
        np.array([[1e308, -1e308]]),
        (x for x in range(3)),
        nn.Linear(3, 3),
    ]
)


def _drive(name, argument, value):
    function, valid = CALLS[name]
    arguments = valid()
    arguments[argument] = value
    with contextlib.suppress(fs.FastsurfaceError):
        function(**arguments)


def _arguments(call):
    """Every named argument of the function, from its signature (keywords included)."""
    parameters = inspect.signature(CALLS[call][0]).parameters.values()
    return sorted(p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


@pytest.mark.slow
@settings(max_examples=600, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(call=st.sampled_from(sorted(CALLS)), data=st.data())
def test_every_public_function_answers_hostile_arguments_with_a_fastsurface_error(call, data):
    argument = data.draw(st.sampled_from(_arguments(call)))
    _drive(call, argument, data.draw(HOSTILE))


@pytest.mark.parametrize("argument", ["model", "data", "plane", "w1", "w2", "points", "loss", "method"])
def test_the_evaluator_answers_every_hostile_value_with_a_fastsurface_error(argument):
    for value in HOSTILE.elements:
        arguments = {"model": _model(), "data": DATA, "w1": GRID[0], "w2": GRID[1], "points": [[0.0, 1.0]]}
        arguments[argument] = value
        options = {name: arguments.pop(name) for name in ("plane", "loss", "method") if name in arguments}
        with contextlib.suppress(fs.FastsurfaceError):
            evaluator = fs.Evaluator(arguments["model"], arguments["data"], **options)
            evaluator.surface(arguments["w1"], arguments["w2"])
            evaluator.losses(arguments["points"])


def _refused(call, match):
    with pytest.raises(fs.FastsurfaceError, match=match):
        call()


class _LaterSampleFails(nn.Module):
    """Fails on inputs above 50: the first samples the engine probes are fine."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1, bias=False)

    def forward(self, x):
        if bool((x > 50).any()):
            raise ValueError("input out of the calibrated range")
        return self.layer(x)


LATER = (np.r_[np.zeros(100), 99.0].astype(np.float32)[:, None], np.zeros((101, 1), np.float32))


CATALOGUE = [
    # 1. memory: refused before any allocation, at sizes that would not fit
    pytest.param(
        lambda: fs.refine(_surface(), _model(), DATA, ((0, 1), (0, 1)), 1e-6), "`w1` x `w2`", id="refine-fine-step"
    ),
    pytest.param(
        lambda: fs.resumable_loss_surface(
            _model(), DATA, fs.axis(0, 3, 1e-4), fs.axis(-5e4, 5e4, 1e-2), checkpoint_dir=_FOLDER
        ),
        "`w1` x `w2`",
        id="resumable-huge-grid",
    ),
    pytest.param(
        lambda: fs.sharded_loss_surface(_model(), DATA, fs.axis(0, 3, 1e-4), fs.axis(-5e4, 5e4, 1e-2)),
        "`w1` x `w2`",
        id="sharded-huge-grid",
    ),
    # 2. complex values are refused, never cast
    pytest.param(lambda: fs.loss_surface(_model(), DATA, [0.0, 1j], [1.0]), "`w1`", id="complex-axis"),
    pytest.param(
        lambda: fs.evaluate_points(_model(), fs.default_plane(_model()), DATA, np.array([[1j, 0]])),
        "`points`",
        id="complex-points",
    ),
    pytest.param(
        lambda: fs.loss_surface(
            _model(),
            DATA,
            *GRID,
            plane=fs.Plane(
                *(
                    {k: v.to(torch.complex64) for k, v in part.items()}
                    for part in (
                        fs.default_plane(_model()).origin,
                        fs.default_plane(_model()).first,
                        fs.default_plane(_model()).second,
                    )
                ),
                ("w1", "w2"),
            ),
        ),
        "`plane`",
        id="complex-plane",
    ),
    pytest.param(lambda: fs.loss_surface(_model(), (DATA[0] + 0j, DATA[1]), *GRID), "`data`", id="complex-data"),
    # 3. finite in float64 but not in the compute dtype
    pytest.param(
        lambda: fs.loss_surface(_model(), (DATA[0] * 1e300, DATA[1]), *GRID),
        "`data`.*float32",
        id="data-beyond-float32",
    ),
    pytest.param(
        lambda: fs.loss_surface(_model(), DATA, [0.0, 1e39], [1.0]), "`w1`.*float32", id="axis-beyond-float32"
    ),
    pytest.param(
        lambda: fs.evaluate_points(_model(), fs.default_plane(_model()), DATA, [[1e39, 0.0]]),
        "`points`.*float32",
        id="points-beyond-float32",
    ),
    # 9. one-shot iterables where several passes are needed
    pytest.param(
        lambda: fs.train_sgd(_model(), iter([DATA]), DATA, epochs=2), "`train`.*one-shot", id="generator-train-epochs"
    ),
    pytest.param(
        lambda: fs.record_path(_model(), (b for b in [DATA]), epochs=2),
        "`train`.*one-shot",
        id="generator-record-epochs",
    ),
    pytest.param(
        lambda: fs.resumable_loss_surface(_model(), iter([DATA]), *GRID, checkpoint_dir=_FOLDER, key="k", block_rows=1),
        "`data`.*one-shot",
        id="generator-several-blocks",
    ),
    # 10. the cause, not vmap
    pytest.param(
        lambda: fs.loss_surface(_LaterSampleFails(), LATER, *GRID, plane=fs.random_plane(_LaterSampleFails())),
        "`model` fails",
        id="model-fails-later",
    ),
    pytest.param(
        lambda: fs.loss_surface(_model(), DATA, *GRID, loss=lambda p, t: (p - t)[:, 0].to(torch.complex64)),
        "`loss`.*floating",
        id="complex-loss",
    ),
    pytest.param(
        lambda: fs.loss_surface(_model(), DATA, *GRID, loss=lambda p, t: (p > t)[:, 0].long()),
        "`loss`.*floating",
        id="integer-loss",
    ),
    # 12. small ones
    pytest.param(
        lambda: fs.loss_surface(_model(), (DATA[0], DATA[1].astype(np.int64)), *GRID),
        "`data`.*real-valued",
        id="integer-mse-targets",
    ),
    pytest.param(lambda: fs.train_sgd(_model(), DATA, "test.csv", epochs=1), "`test`", id="train-bad-test"),
    pytest.param(lambda: fs.loss_surface(_model(), DATA, *GRID, progress="no"), "`progress`", id="progress-string"),
    pytest.param(
        lambda: fs.train_sgd(_model(), DATA, DATA, epochs=1, progress="no"), "`progress`", id="train-progress-string"
    ),
    pytest.param(
        lambda: fs.pca_plane(fs.ParameterPath(("w",), ((2,),), np.ones((4, 2)), np.arange(4))),
        "`path`",
        id="pca-constant",
    ),
    pytest.param(
        lambda: fs.pca_plane(fs.ParameterPath(("w",), ((2,),), np.full((4, 2), np.nan), np.arange(4))),
        "`path`",
        id="pca-nan",
    ),
    pytest.param(lambda: fs.pca_plane("path"), "`path`", id="pca-string"),
    # 9. objects in the place of others, found by the sweep
    pytest.param(
        lambda: fs.project_path(_model(), fs.default_plane(_model()), None, DATA), "`path`", id="project-no-path"
    ),
    pytest.param(lambda: fs.project_path(None, fs.default_plane(_model()), _path()), "`model`", id="project-no-model"),
    pytest.param(
        lambda: fs.plot_basins(fs.basin_map(_runs()), critical_points="no"), "`critical_points`", id="basins-critical"
    ),
    pytest.param(lambda: fs.plot_basins(fs.basin_map(_runs()), surface=1.5), "`surface`", id="basins-surface"),
    pytest.param(
        lambda: fs.save_hdf5(_FOLDER / "n.h5", _surface(), name=np.array([1.0])), "`name`", id="hdf5-array-name"
    ),
    pytest.param(
        lambda: fs.metric_surfaces(_model(), DATA, *GRID, metrics={"mse": "mse"}, higher_is_better=np.zeros((2, 2))),
        "`higher_is_better`",
        id="metrics-array-direction",
    ),
    pytest.param(lambda: fs.line_plane(fs.default_plane(_model()).origin, None), "`direction`", id="line-no-direction"),
    pytest.param(lambda: fs.critical_points_of(None, GRID[0], GRID[1]), "`function`", id="critical-of-none"),
    pytest.param(lambda: fs.train_many(_model(), None, DATA, grid=GRID, epochs=1), "`train`", id="many-no-train"),
    pytest.param(lambda: fs.train_many(_model(), DATA, "test", grid=GRID, epochs=1), "`test`", id="many-bad-test"),
    # Found by a hostile-input sweep (session of 2026-11-30).
    pytest.param(lambda: fs.axis(-1e308, 1e308, 0.05), "`step`", id="axis-span-past-float64"),
    pytest.param(lambda: fs.axis(0, 10**400, 1), "`stop`", id="axis-int-past-float64"),
    pytest.param(lambda: fs.axis(-1e308, 1e308, 1e307), "`start`", id="axis-values-past-float64"),
    pytest.param(lambda: fs.axis(True, 2, 1), "`start`", id="axis-bool"),
    pytest.param(
        lambda: fs.train_many(_model(), DATA, DATA, starts=np.array([[0.5 + 3j, 0.0]]), epochs=1),
        "`starts`",
        id="many-complex-starts",
    ),
    pytest.param(
        lambda: fs.train_many(_model(), DATA, DATA, starts=np.array([[True, False]]), epochs=1),
        "`starts`",
        id="many-bool-starts",
    ),
    pytest.param(
        lambda: fs.train_many(_model(), DATA, DATA, grid=(np.arange(1e5), np.arange(1e5)), epochs=1),
        "`grid`: 10,000,000,000 runs",
        id="many-runs-past-memory",
    ),
    pytest.param(lambda: fs.record_path(_model(), DATA, epochs=10**9), "`epochs`", id="path-steps-past-limit"),
    pytest.param(
        lambda: fs.critical_points_of(lambda a, b: a * b, np.arange(1e5), np.arange(1e5)),
        "`w1` x `w2`",
        id="critical-of-grid-past-memory",
    ),
    pytest.param(lambda: fs.critical_points_of(lambda a, b: a + b * 1j, *GRID), "`function`", id="critical-of-complex"),
    pytest.param(lambda: fs.train_sgd(_model(), DATA, DATA, start=(1e39, 0.0)), "`start`", id="sgd-start-past-float32"),
    pytest.param(lambda: fs.train_sgd(_model(), DATA, DATA, start=(True, False)), "`start`", id="sgd-bool-start"),
    pytest.param(lambda: fs.basin_map(_runs(), True), "`tolerance`", id="basins-bool-tolerance"),
    pytest.param(
        lambda: fs.loss_surface(_model(), (torch.tensor(DATA[0]).reshape(-1, 1).to_sparse(), DATA[1]), *GRID),
        "`data`",
        id="sparse-data",
    ),
]


@pytest.mark.parametrize(("call", "match"), CATALOGUE)
def test_each_class_of_bad_input_is_refused_by_name(call, match):
    _refused(call, match)


def test_a_train_sgd_test_set_is_checked_before_any_training(monkeypatch):
    from fastsurface.analysis import training

    monkeypatch.setattr(training, "training_runs", lambda *a, **k: pytest.fail("trained before checking `test`"))
    _refused(lambda: fs.train_sgd(_model(), DATA, (np.ones(2), np.ones(1)), epochs=1), "`test`")


def test_float64_compute_accepts_what_float32_cannot_hold():
    surface = fs.loss_surface(_model(), DATA, [0.0, 1e39], [1.0], dtype="float64", device="cpu")
    assert np.isfinite(surface.loss).all()


class _ChecksPassedError(Exception):
    """Raised where ``run_basin_bench`` would start its work: every check passed."""


@pytest.mark.parametrize("argument", ["devices", "grid", "epochs", "repeats", "max_seconds"])
def test_the_basin_bench_answers_every_hostile_value_before_any_work(monkeypatch, argument):
    from fastsurface import basin_bench

    def reached():
        raise _ChecksPassedError

    monkeypatch.setattr(basin_bench, "seed_split", reached)
    for value in HOSTILE.elements:
        arguments = {"devices": ["cpu"], "grid": 4, "epochs": 1, "repeats": 1, "max_seconds": 1.0, argument: value}
        with contextlib.suppress(fs.FastsurfaceError, _ChecksPassedError):
            basin_bench.run_basin_bench(**arguments)


def test_bfloat16_values_are_read_as_the_numbers_they_hold():
    axis = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.bfloat16)
    data = tuple(torch.tensor(values, dtype=torch.bfloat16) for values in DATA)
    surface = fs.loss_surface(_model(), data, axis, axis, dtype="float64")
    expected = fs.loss_surface(_model(), tuple(t.double() for t in data), [-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5])
    np.testing.assert_allclose(surface.loss, expected.loss, rtol=1e-6)


def test_a_huge_basin_tolerance_links_every_end_point():
    assert fs.basin_map(_runs(), 1e308).sizes.tolist() == [len(GRID[0]) * len(GRID[1])]
