"""A catalogue of bad inputs: each is refused by one FastsurfaceError naming the argument.

API cases run in-process; CLI cases check the one-line message on stderr, the exit
status and that nothing was written.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastsurface as fs
from tests.helpers import assert_cli_refused

X, Y = fs.piecewise_dataset(40)
DATA = (X, Y)
GRID = (fs.axis(-1, 1, 0.5), fs.axis(-1, 1, 0.5))


def _surface(**options):
    return fs.loss_surface(fs.ANN(1, 1, 1), options.pop("data", DATA), *options.pop("grid", GRID), **options)


def _train(**options):
    return fs.train_sgd(fs.ANN(1, 1, 1), DATA, DATA, **options)


def _with(values, index, value):
    changed = np.array(values, dtype=np.float64)
    changed[index] = value
    return changed


def _foreign_plane():
    """A plane of a wider network: same parameter names, other shapes."""
    return fs.entry_plane(fs.ANN(1, 2, 1), "net.Layer_1.weight[1, 0]", "net.Layer_2.weight[0, 1]")


def _plane_with_extra_direction():
    model = nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 1))
    plane = fs.entry_plane(model, "0.weight[0, 0]", "2.weight[0, 1]")
    return fs.Plane(plane.origin, {**plane.first, "2.bias": torch.ones(1)}, plane.second)


def _broadcasting_plane():
    plane = fs.default_plane(fs.ANN(1, 1, 1))
    return fs.Plane(plane.origin, {name: t.reshape(-1) for name, t in plane.first.items()}, plane.second)


def _zeros(module):
    if isinstance(module, nn.Linear):
        module.weight.zero_()


class _Dict(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 2))

    def forward(self, x):
        return {"prediction": x @ self.weight[:, :1]}


def _classes(labels):
    """Three-class logits of a linear model; one target (in the last batch) set to ``labels``."""
    targets = np.zeros(40, dtype=np.int64)
    targets[-1] = labels
    model = nn.Linear(1, 3)
    plane = fs.entry_plane(model, "weight[0, 0]", "weight[1, 0]")
    loader = DataLoader(
        TensorDataset(torch.as_tensor(X[:, None], dtype=torch.float32), torch.as_tensor(targets)), batch_size=8
    )
    return fs.loss_surface(model, loader, *GRID, plane=plane, loss="cross_entropy", memory_budget=2**12)


def _refined(**options):
    coarse = fs.loss_surface(fs.ANN(1, 1, 1), DATA, *GRID, reduction="batch_mean", batch_size=16)
    arguments = {"data": DATA, "batch_size": 16, **options}
    return fs.refine(coarse, fs.ANN(1, 1, 1), arguments.pop("data"), ((-0.5, 0.5), (-0.5, 0.5)), 0.25, **arguments)


def _path():
    return fs.record_path(fs.ANN(1, 2, 1), DATA, epochs=3)


def _uneven_loader(inputs=(8, 1), targets=(8, 1)):
    """Two batches of the seed shapes, then one of ``inputs`` and ``targets``."""
    return [(torch.zeros(8, 1), torch.zeros(8, 1))] * 2 + [(torch.zeros(inputs), torch.zeros(targets))]


def _small_surface():
    return fs.loss_surface(fs.ANN(1, 1, 1), DATA, [0.0], [0.0, 1.0])


API_CASES = [
    # data
    pytest.param(lambda: _surface(data=(_with(X, 3, np.nan), Y)), "data", id="nan-in-x"),
    pytest.param(lambda: _surface(data=(X, _with(Y, 0, np.inf))), "data", id="inf-in-y"),
    pytest.param(lambda: _surface(data=(X, Y[:-1])), "data", id="mismatched-x-y-lengths"),
    pytest.param(lambda: _surface(data=(X[:0], Y[:0])), "data", id="empty-data"),
    pytest.param(lambda: _surface(data=(X, np.zeros((len(X), 2)))), "data", id="targets-of-another-shape"),
    pytest.param(
        lambda: _surface(data=DataLoader(TensorDataset(torch.zeros(8, 1), torch.zeros(8)), batch_size=4)),
        "data",
        id="targets-that-would-broadcast",
    ),
    pytest.param(lambda: _surface(data=(X, np.array(["a"] * len(X)))), "data", id="text-targets"),
    pytest.param(lambda: _surface(data=3), "data", id="data-not-a-pair"),
    pytest.param(lambda: fs.train_test_split(X, Y[:-1]), "x", id="split-mismatched-lengths"),
    pytest.param(lambda: fs.train_test_split(X, Y, test_size=1.5), "test_size", id="split-test-size"),
    pytest.param(lambda: fs.train_test_split(X, Y, seed=-1), "seed", id="negative-split-seed"),
    pytest.param(lambda: fs.piecewise_dataset(0), "n", id="no-samples"),
    pytest.param(lambda: fs.piecewise_dataset(10, seed="a"), "seed", id="text-seed"),
    # axes
    pytest.param(lambda: _surface(grid=([], GRID[1])), "w1", id="empty-axis"),
    pytest.param(lambda: _surface(grid=(GRID[0], [1.0, 0.0])), "w2", id="descending-axis"),
    pytest.param(lambda: _surface(grid=([0.0, 0.0, 1.0], GRID[1])), "w1", id="repeated-axis-value"),
    pytest.param(lambda: _surface(grid=(GRID[0], [0.0, np.inf])), "w2", id="non-finite-axis"),
    pytest.param(lambda: _surface(grid=(np.zeros((2, 2)), GRID[1])), "w1", id="two-dimensional-axis"),
    pytest.param(lambda: fs.axis(0, 1, 0), "step", id="zero-step"),
    pytest.param(lambda: fs.axis(0, 1, float("nan")), "step", id="nan-step"),
    pytest.param(lambda: fs.axis(1, 0, 0.1), "stop", id="stop-below-start"),
    pytest.param(lambda: fs.axis(0, 1, 1e-12), "step", id="absurdly-many-axis-values"),
    pytest.param(lambda: fs.plot_surface(_small_surface()), "surface", id="one-point-axis-cannot-be-drawn"),
    # devices, dtypes, engine settings
    pytest.param(lambda: _surface(device="tpu"), "device", id="unknown-device"),
    pytest.param(lambda: _surface(device="mps"), "device", id="unsupported-device"),
    pytest.param(lambda: _surface(device="cuda:7"), "device", id="unavailable-cuda-device"),
    pytest.param(lambda: _surface(dtype=torch.float16), "dtype", id="float16-dtype"),
    pytest.param(lambda: _surface(dtype="int32"), "dtype", id="integer-dtype"),
    pytest.param(lambda: _surface(memory_budget=-1), "memory_budget", id="negative-budget"),
    pytest.param(lambda: _surface(memory_budget=2**60), "memory_budget", id="absurd-budget"),
    pytest.param(lambda: _surface(memory_budget=1), "memory_budget", id="budget-below-one-point"),
    pytest.param(lambda: _surface(tile_points=0), "tile_points", id="zero-tile-points"),
    pytest.param(lambda: _surface(tile_points=2**40), "tile_points", id="absurd-tile-points"),
    pytest.param(lambda: _surface(batch_size=0), "batch_size", id="zero-batch-size"),
    pytest.param(lambda: _surface(reduction="sum"), "reduction", id="unknown-reduction"),
    pytest.param(lambda: _surface(loss="hinge"), "loss", id="unknown-loss"),
    pytest.param(lambda: _surface(method="magic"), "method", id="unknown-method"),
    pytest.param(
        lambda: _surface(grid=(fs.axis(0, 1, 1e-6), fs.axis(0, 1, 1e-6))), "w1", id="grid-too-large-for-memory"
    ),
    # models and planes
    pytest.param(lambda: fs.loss_surface("model", DATA, *GRID), "model", id="model-not-a-module"),
    pytest.param(
        lambda: fs.entry_plane(fs.ANN(1, 1, 1), "net.Layer_9.weight[0, 0]", "net.Layer_2.weight[0, 0]"),
        "first",
        id="no-such-parameter",
    ),
    pytest.param(
        lambda: fs.entry_plane(fs.ANN(1, 1, 1), "net.Layer_1.weight[0, 0]", "net.Layer_2.weight[0, 5]"),
        "second",
        id="index-out-of-range",
    ),
    pytest.param(lambda: _surface(plane=_foreign_plane()), "plane", id="plane-of-another-model"),
    pytest.param(lambda: _surface(plane="w1"), "plane", id="plane-not-a-plane"),
    pytest.param(lambda: fs.loss_surface(fs.ANN(1, 3, 1), DATA, *GRID), "plane", id="no-default-plane"),
    pytest.param(
        lambda: fs.evaluate_points(fs.ANN(1, 1, 1), fs.default_plane(fs.ANN(1, 1, 1)), DATA, np.zeros(3)),
        "points",
        id="points-of-wrong-shape",
    ),
    pytest.param(
        lambda: fs.evaluate_points(fs.ANN(1, 1, 1), fs.default_plane(fs.ANN(1, 1, 1)), DATA, [["a", "b"]]),
        "points",
        id="points-not-numbers",
    ),
    pytest.param(lambda: _surface(plane=_plane_with_extra_direction()), "plane", id="direction-beyond-origin"),
    pytest.param(lambda: _surface(plane=_broadcasting_plane()), "plane", id="direction-of-another-shape"),
    pytest.param(
        lambda: fs.random_plane(nn.Linear(3, 2, bias=False).requires_grad_(False).apply(_zeros)),
        "model",
        id="random-directions-all-zero",
    ),
    pytest.param(lambda: fs.random_plane(fs.ANN(1, 2, 1), seed=1.5), "seed", id="fractional-plane-seed"),
    pytest.param(lambda: _surface(data=(np.arange(40), Y)), "model", id="integer-inputs-for-a-float-model"),
    pytest.param(lambda: _surface(data=(X[:, None].repeat(3, 1), Y)), "model", id="inputs-of-another-width"),
    pytest.param(lambda: fs.loss_surface(_Dict(), DATA, *GRID), "model", id="model-returns-a-dict"),
    pytest.param(
        lambda: fs.metric_surfaces(fs.ANN(1, 1, 1), DATA, *GRID, metrics={"accuracy": fs.accuracy}),
        "data",
        id="accuracy-of-real-valued-targets",
    ),
    pytest.param(lambda: _surface(data=_uneven_loader(targets=(8,))), "data", id="later-batch-targets-would-broadcast"),
    pytest.param(
        lambda: _surface(data=_uneven_loader(inputs=(8, 2))), "model", id="later-batch-inputs-of-another-width"
    ),
    pytest.param(lambda: _classes(labels=3), "data", id="class-target-out-of-range"),
    pytest.param(lambda: _classes(labels=-1), "data", id="negative-class-target"),
    pytest.param(lambda: _refined(batch_size=8), "data", id="refine-with-another-batch-size"),
    pytest.param(lambda: _refined(data=(X[:30], Y[:30])), "data", id="refine-with-other-data"),
    pytest.param(lambda: fs.pca_plane(_path(), origin=1.5), "origin", id="pca-origin-not-an-index"),
    pytest.param(lambda: fs.project_path(fs.ANN(1, 2, 1), "plane", _path()), "plane", id="project-onto-a-string"),
    pytest.param(
        lambda: fs.project_path(fs.ANN(1, 2, 1), fs.random_plane(fs.ANN(1, 3, 1)), _path()),
        "plane",
        id="project-onto-another-model-s-plane",
    ),
    pytest.param(lambda: fs.sharded_loss_surface(fs.ANN(1, 1, 1), DATA, *GRID, tiles=3), "options", id="shard-option"),
    pytest.param(
        lambda: fs.loss_line(fs.ANN(1, 2, 1), DATA, "abc", line=fs.random_line(fs.ANN(1, 2, 1))), "t", id="line-t-text"
    ),
    # training
    pytest.param(
        lambda: fs.record_path(fs.ANN(1, 2, 1), DATA, epochs=3, optimizer=lambda p: torch.optim.SGD(p, lr=1e30)),
        "optimizer",
        id="record-a-diverging-optimizer",
    ),
    pytest.param(lambda: fs.record_path(fs.ANN(1, 2, 1), DATA, record=[]), "record", id="record-nothing"),
    pytest.param(lambda: fs.record_path(fs.ANN(1, 2, 1), DATA, record=[10**6]), "record", id="record-beyond-end"),
    pytest.param(lambda: fs.record_path(fs.ANN(1, 2, 1), DATA, seed="0"), "seed", id="text-path-seed"),
    pytest.param(lambda: _train(epochs=0), "epochs", id="zero-epochs"),
    pytest.param(lambda: _train(epochs=-3), "epochs", id="negative-epochs"),
    pytest.param(lambda: _train(epochs=10**9), "epochs", id="absurd-epochs"),
    pytest.param(lambda: _train(lr=-0.1), "lr", id="negative-lr"),
    pytest.param(lambda: _train(lr=float("inf")), "lr", id="infinite-lr"),
    pytest.param(lambda: _train(lr=float("nan")), "lr", id="nan-lr"),
    pytest.param(lambda: _train(start=(float("nan"), 0.0)), "start", id="nan-start"),
    pytest.param(lambda: _train(record="batch"), "record", id="unknown-record"),
    pytest.param(lambda: _train(seed=2**40), "seed", id="seed-out-of-range"),
    # files and figures
    pytest.param(lambda: fs.save("/nonexistent/folder/s.npz", surface=_small_surface()), "path", id="save-no-folder"),
    pytest.param(lambda: fs.save(__file__ + "/s.npz", surface=_small_surface()), "path", id="save-under-a-file"),
    pytest.param(lambda: fs.save("s.txt", surface=_small_surface()), "path", id="save-wrong-suffix"),
    pytest.param(lambda: fs.save("s.npz"), "surface", id="save-nothing"),
    pytest.param(
        lambda: fs.save("s.npz", surface=_small_surface(), provenance={"f": print}),
        "provenance",
        id="save-bad-provenance",
    ),
    pytest.param(lambda: fs.load("/nonexistent/s.npz"), "path", id="load-missing-file"),
    pytest.param(lambda: fs.load(__file__), "path", id="load-not-an-archive"),
    pytest.param(lambda: fs.plot_surface("surface"), "surface", id="plot-not-a-surface"),
    pytest.param(lambda: fs.plot_surface(_surface(), colour="red"), "style", id="plot-unknown-style"),
]


@pytest.mark.parametrize(("call", "name"), API_CASES)
def test_api_refuses_bad_input_naming_the_argument(call, name):
    with pytest.raises(fs.FastsurfaceError, match=f"`{name}`"):
        call()


def test_the_catalogue_is_long_enough():
    assert len(API_CASES) + len(CLI_CASES) >= 25


SMALL = ["--step", "0.5", "--samples", "200", "--epochs", "1", "--no-progress"]

CLI_CASES = [
    pytest.param(["run", "--step", "0"], "`--step`", id="cli-zero-step"),
    pytest.param(["run", "--step", "5"], "`--step`", id="cli-one-point-axis"),
    pytest.param(["run", "--w1", "1", "-1"], "`--w1`", id="cli-descending-range"),
    pytest.param(["run", "--w2", "0", "nan"], "`--w2`", id="cli-nan-range"),
    pytest.param(["run", "--lr", "-1"], "`--lr`", id="cli-negative-lr"),
    pytest.param(["run", "--epochs", "0"], "`--epochs`", id="cli-zero-epochs"),
    pytest.param(["run", "--epochs", "ten"], "--epochs", id="cli-epochs-not-a-number"),
    pytest.param(["run", "--device", "cuda:7"], "`--device`", id="cli-unavailable-device"),
    pytest.param(["run", "--dtype", "float16"], "--dtype", id="cli-unsupported-dtype"),
    pytest.param(["run", "--samples", "0"], "`--samples`", id="cli-no-samples"),
    pytest.param(["run", "--batch-size", "0"], "`--batch-size`", id="cli-zero-batch-size"),
    pytest.param(["run", "--test-size", "1.5"], "`--test-size`", id="cli-test-size"),
    pytest.param(["run", "--seed", "-1"], "`--seed`", id="cli-negative-seed"),
    pytest.param(["run", "--output", "/nonexistent/dir/f.html"], "`--output`", id="cli-unwritable-output"),
    pytest.param(["run", "--output", "figure.png"], "`--output`", id="cli-output-suffix"),
    pytest.param(["run", "--save", "/nonexistent/dir/r.npz"], "`--save`", id="cli-unwritable-save"),
    pytest.param(["surface", "--save", "surface.csv"], "`--save`", id="cli-save-suffix"),
    pytest.param(["surface", "--checkpoint-dir", "/nonexistent/a/b"], "`--checkpoint-dir`", id="cli-checkpoint-dir"),
    pytest.param(["surface", "--checkpoint-dir", ".", "--block-rows", "0"], "`--block-rows`", id="cli-zero-block-rows"),
    pytest.param(["surface", "--keep-checkpoint"], "`--keep-checkpoint`", id="cli-keep-without-checkpoints"),
    pytest.param(
        ["surface", "--shard", "data", "--checkpoint-dir", "."], "`--checkpoint-dir`", id="cli-data-shard-checkpoints"
    ),
    pytest.param(["show", "/nonexistent/r.npz"], "`path`", id="cli-show-missing-file"),
    pytest.param(["run", "--split-seed", "-1"], "`--split-seed`", id="cli-negative-split-seed"),
    pytest.param(["run", "--train-seed", "-1"], "`--train-seed`", id="cli-negative-train-seed"),
    pytest.param(["run", "--test-size", "3000"], "`--test-size`", id="cli-test-count-too-large"),
    pytest.param(["run", "--lr", "1e12", "--epochs", "3"], "`--lr`", id="cli-diverging-sgd"),
    pytest.param(["run", "--lr", "100", "--fit-trajectory"], "`--fit-trajectory`", id="cli-fit-a-runaway-path"),
    pytest.param(["run", "--samples", str(10**13)], "`--samples`", id="cli-samples-beyond-memory"),
    pytest.param(["bench", "--naive-rows", "81"], "`--naive-rows`", id="cli-bench-naive-rows"),
    pytest.param(["bench", "--max-seconds", "0"], "`--max-seconds`", id="cli-bench-max-seconds"),
    pytest.param(["bench", "--model", "resnet"], "`--model`", id="cli-bench-unknown-model"),
    pytest.param(["bench", "--model", "--samples", "0"], "`--samples`", id="cli-bench-model-no-samples"),
    pytest.param(["bench", "--model", "--grid", str(10**6)], "`--grid`", id="cli-bench-model-grid-beyond-memory"),
    pytest.param(["bench", "--model", "--steps", "0.5"], "`--steps`", id="cli-bench-model-seed-flag"),
    pytest.param(["bench", "--grid", "5"], "`--grid`", id="cli-bench-model-flag-without-model"),
]


@pytest.mark.parametrize(("arguments", "name"), CLI_CASES)
def test_cli_refuses_bad_input_on_one_line(tmp_path, capsys, monkeypatch, arguments, name):
    monkeypatch.chdir(tmp_path)
    options = {"run": SMALL, "surface": SMALL[:4]}.get(arguments[0], [])
    assert_cli_refused([arguments[0], *options, *arguments[1:]], name, tmp_path, capsys)
