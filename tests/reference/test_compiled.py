"""The torch.compile'd brute-force kernel against the vmap kernel and a float64 reference.

Each distinct compiled shape costs seconds of compilation, so these tests share one:
the seed test split (2,000 samples, padded to 2,048) and tiles of 512 points."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.analysis import many
from fastsurface.engine import _inductor, evaluate
from fastsurface.engine._kernels import compile_available
from tests.helpers import DEVICES, SMALL_MODELS, assert_close, numpy_seed_loss

# Slow as a whole: whichever test runs first pays the compilation.
pytestmark = [
    pytest.mark.skipif(not compile_available(torch.device("cpu")), reason="needs a C++ compiler"),
    pytest.mark.slow,
]
TILE = 512


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_compiled_equals_vmap_with_padded_tiles_and_chunks(rng, seed_split, device, reduction):
    _, (x, y) = seed_split
    w1, w2 = np.sort(rng.uniform(-2, 2, 37)), np.sort(rng.uniform(-2, 2, 29))  # 1,073 points: a short last tile
    kwargs = {"reduction": reduction, "batch_size": 50, "tile_points": TILE, "device": device}
    compiled = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, method="compiled", **kwargs)
    brute = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, method="vmap", **kwargs)
    assert compiled.method == "compiled" and compiled.tile_points == TILE
    assert_close(compiled.loss, brute.loss, rtol=1e-5)
    if reduction == "mean":
        assert_close(compiled.loss, numpy_seed_loss(w1, w2, x, y), rtol=1e-6)


def test_a_second_surface_does_not_recompile(seed_split, monkeypatch):
    _, test = seed_split
    w = fs.axis(-2, 2, 0.1)
    first = fs.loss_surface(fs.ANN(1, 1, 1), test, w, w, method="compiled", tile_points=TILE)
    compiles = []
    compile_flat = _inductor._compile_flat
    monkeypatch.setattr(_inductor, "_compile_flat", lambda f, inputs: compiles.append(1) or compile_flat(f, inputs))
    other_model = fs.ANN(1, 1, 1)
    second = fs.loss_surface(other_model, test, w[:-3], w, method="compiled", tile_points=TILE)
    assert not compiles
    assert_close(second.loss, fs.loss_surface(other_model, test, w[:-3], w, method="vmap").loss, rtol=1e-5)
    assert first.loss.shape == (40, 40)


class _Probe(nn.Module):
    """A structure no other test compiles, so each shape here is a new graph."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(2, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def test_grid_sizes_share_power_of_two_tiles(rng, monkeypatch):
    torch.manual_seed(0)
    model = _Probe()
    plane = fs.random_plane(model, seed=0)
    data = (rng.normal(size=(100, 2)), rng.normal(size=(100, 1)))
    sizes = [(5, 5), (6, 5), (7, 7), (10, 10)]  # tiles 32, 32, 64, 128
    compiled_shapes = []
    compile_flat = _inductor._compile_flat
    monkeypatch.setattr(_inductor, "_cache", OrderedDict())  # nothing compiled earlier in the process is reused
    monkeypatch.setattr(
        _inductor, "_compile_flat", lambda f, inputs: compiled_shapes.append(inputs[0].shape) or compile_flat(f, inputs)
    )
    for rows, columns in sizes:
        w1, w2 = np.linspace(-1, 1, rows), np.linspace(-1, 1, columns)
        compiled = fs.loss_surface(model, data, w1, w2, plane=plane, method="compiled", device="cpu")
        eager = fs.loss_surface(model, data, w1, w2, plane=plane, method="vmap", device="cpu")
        assert compiled.tile_points == 1 << (rows * columns - 1).bit_length()
        assert_close(compiled.loss, eager.loss, rtol=1e-5)
    assert compiled_shapes == [(32,), (64,), (128,)]


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_compiled_equals_vmap_on_small_models_of_each_kind(rng, name):
    make, shape = SMALL_MODELS[name]
    torch.manual_seed(1)
    model = make()
    plane = fs.random_plane(model, seed=1)
    data = (rng.normal(size=(300, *shape)), rng.integers(0, 2, 300))
    w1, w2 = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
    kwargs = {"plane": plane, "loss": "cross_entropy", "device": "cpu"}
    compiled = fs.loss_surface(model, data, w1, w2, method="compiled", **kwargs)
    eager = fs.loss_surface(model, data, w1, w2, method="vmap", dtype="float64", **kwargs)
    assert_close(compiled.loss, eager.loss, rtol=1e-5)


class _Branching(nn.Module):
    """A forward that branches on its inputs' values, which one compiled graph cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def _branching_problem(rng):
    torch.manual_seed(0)
    model = _Branching()
    return model, fs.random_plane(model, seed=0), (rng.normal(size=(60, 2)), rng.normal(size=(60, 1)))


def test_a_model_that_branches_on_values_is_refused_by_the_compiled_route_and_auto_falls_back(rng, monkeypatch):
    model, plane, data = _branching_problem(rng)
    w = np.linspace(-1, 1, 5)
    with pytest.raises(fs.FastsurfaceError, match=r"cannot trace this model.*'vmap'"):
        fs.loss_surface(model, data, w, w, plane=plane, method="compiled", device="cpu")
    monkeypatch.setattr(evaluate, "COMPILE_THRESHOLD", 1)  # auto would compile this small grid
    chosen = fs.loss_surface(model, data, w, w, plane=plane, device="cpu")
    reference = fs.loss_surface(model, data, w, w, plane=plane, method="vmap", dtype="float64", device="cpu")
    assert chosen.method == "vmap"
    assert_close(chosen.loss, reference.loss, rtol=1e-6)


def test_train_many_falls_back_from_an_untraceable_model_under_auto(rng, monkeypatch):
    model, plane, data = _branching_problem(rng)
    starts = np.array([[0.0, 0.0], [0.5, -0.5]])
    options = {"plane": plane, "starts": starts, "epochs": 1, "batch_size": 20, "device": "cpu"}
    with pytest.raises(fs.FastsurfaceError, match="cannot trace this model"):
        fs.train_many(model, data, data, training_method="compiled", **options)
    monkeypatch.setattr(many, "COMPILE_THRESHOLD", 1)
    chosen = fs.train_many(model, data, data, **options)
    eager = fs.train_many(model, data, data, training_method="vmap", **options)
    assert chosen.method == "vmap"
    assert np.array_equal(chosen.positions, eager.positions)
