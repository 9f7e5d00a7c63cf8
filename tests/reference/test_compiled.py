"""The torch.compile'd brute-force kernel against the vmap kernel and a float64 reference.

Each distinct compiled shape costs seconds of compilation, so these tests share one:
the seed test split (2,000 samples, padded to 2,048) and tiles of 512 points."""

import numpy as np
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import fastsurface as fs
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


def test_a_second_surface_does_not_recompile(seed_split):
    _, test = seed_split
    w = fs.axis(-2, 2, 0.1)
    first = fs.loss_surface(fs.ANN(1, 1, 1), test, w, w, method="compiled", tile_points=TILE)
    graphs = counters["stats"]["unique_graphs"]
    other_model = fs.ANN(1, 1, 1)
    second = fs.loss_surface(other_model, test, w[:-3], w, method="compiled", tile_points=TILE)
    assert counters["stats"]["unique_graphs"] == graphs
    assert_close(second.loss, fs.loss_surface(other_model, test, w[:-3], w, method="vmap").loss, rtol=1e-5)
    assert first.loss.shape == (40, 40)


class _Probe(nn.Module):
    """A structure no other test compiles, so each shape here is a new graph."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(2, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def test_grid_sizes_share_power_of_two_tiles_and_compile_past_dynamos_limit(rng):
    # Every vmap'd function shares one code object in dynamo; with its recompile limit
    # at 1, only the engine's own limit lets the second and third shapes compile.
    torch.manual_seed(0)
    model = _Probe()
    plane = fs.random_plane(model, seed=0)
    data = (rng.normal(size=(100, 2)), rng.normal(size=(100, 1)))
    sizes = [(5, 5), (6, 5), (7, 7), (10, 10)]  # tiles 32, 32, 64, 128
    with torch._dynamo.config.patch(recompile_limit=1):
        graphs = counters["stats"]["unique_graphs"]
        for rows, columns in sizes:
            w1, w2 = np.linspace(-1, 1, rows), np.linspace(-1, 1, columns)
            compiled = fs.loss_surface(model, data, w1, w2, plane=plane, method="compiled", device="cpu")
            eager = fs.loss_surface(model, data, w1, w2, plane=plane, method="vmap", device="cpu")
            assert compiled.tile_points == 1 << (rows * columns - 1).bit_length()
            assert_close(compiled.loss, eager.loss, rtol=1e-5)
        assert counters["stats"]["unique_graphs"] - graphs == 3


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
