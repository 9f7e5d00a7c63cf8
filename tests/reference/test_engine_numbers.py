"""The engine's losses against the naive per-point loop, a float64 numpy reference and the CPU."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from tests.helpers import DEVICES, assert_close, cuda, numpy_seed_loss

SEED_GRID = fs.axis(-2, 2, 0.05)


def _sub_grid(rng, rows, columns):
    return np.sort(rng.choice(SEED_GRID, rows, replace=False)), np.sort(rng.choice(SEED_GRID, columns, replace=False))


def test_batch_mean_equals_the_article_loop_on_random_sub_grids(rng, seed_split):
    _, test = seed_split
    model = fs.ANN(1, 1, 1)
    for _ in range(2):
        w1, w2 = _sub_grid(rng, 4, 3)
        surface = fs.loss_surface(model, test, w1, w2, reduction="batch_mean", batch_size=64, device="cpu")
        naive = fs.naive_loss_surface(model, test, w1, w2, reduction="batch_mean", batch_size=64, dtype=torch.float32)
        assert_close(surface.loss, naive, rtol=1e-5)
        assert surface.batches == 32 and surface.samples == 2000


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_mean_equals_a_float64_numpy_reference(rng, seed_split, device, dtype, rtol):
    _, (x, y) = seed_split
    w1, w2 = _sub_grid(rng, 17, 23)
    surface = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, device=device, dtype=dtype)
    assert_close(surface.loss, numpy_seed_loss(w1, w2, x, y), rtol=rtol)
    assert surface.device.startswith(device) and surface.reduction == "mean"


@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_random_data_and_batch_sizes_match_the_naive_loop_in_float64(rng, reduction):
    n = int(rng.integers(1, 300))
    x, y = rng.normal(size=n), rng.normal(size=n)
    w1, w2 = np.sort(rng.uniform(-3, 3, 5)), np.sort(rng.uniform(-3, 3, 4))
    batch_size = int(rng.integers(1, 80))
    surface = fs.loss_surface(
        fs.ANN(1, 1, 1), (x, y), w1, w2, reduction=reduction, batch_size=batch_size, dtype="float64", device="cpu"
    )
    naive = fs.naive_loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, reduction=reduction, batch_size=batch_size)
    assert_close(surface.loss, naive, rtol=1e-12)


def test_loss_indexing_on_a_non_square_grid(seed_split):
    _, (x, y) = seed_split
    w1, w2 = np.array([-1.5, 0.25, 0.5]), np.array([-0.5, 0.0, 1.0, 1.75, 2.5])
    surface = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, dtype="float64", device="cpu")
    assert surface.loss.shape == (3, 5)
    for i, j in [(0, 4), (2, 0), (1, 3)]:
        expected = np.mean((w2[j] * np.tanh(w1[i] * x) - y) ** 2)
        assert_close(surface.loss[i, j], expected, rtol=1e-12)


def test_an_entry_plane_of_a_larger_model_matches_the_naive_loop(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    plane = fs.entry_plane(model, "0.weight[2, 1]", "2.bias[1]")
    w1, w2 = np.linspace(-1, 1, 4), np.linspace(-2, 0, 3)
    surface = fs.loss_surface(
        model, (x, y), w1, w2, plane=plane, dtype="float64", reduction="batch_mean", batch_size=16
    )
    naive = fs.naive_loss_surface(model, (x, y), w1, w2, plane=plane, reduction="batch_mean", batch_size=16)
    assert_close(surface.loss, naive, rtol=1e-12)
    assert surface.labels == ("0.weight[2, 1]", "2.bias[1]")


@cuda
@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_cuda_equals_cpu(seed_split, reduction):
    _, test = seed_split
    w1, w2 = fs.axis(-2, 2, 0.05), fs.axis(-2, 2, 0.05)
    on_gpu = fs.loss_surface(fs.ANN(1, 1, 1), test, w1, w2, device="cuda", reduction=reduction)
    on_cpu = fs.loss_surface(fs.ANN(1, 1, 1), test, w1, w2, device="cpu", reduction=reduction)
    assert on_gpu.loss_tensor.device.type == "cuda"
    assert_close(on_gpu.loss, on_cpu.loss, rtol=1e-5)


class _ScalesItsInput(nn.Module):
    """A custom forward that writes into its input, as ``x.mul_`` does."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def forward(self, x):
        return self.layer(x.mul_(0.5))


def _written_input_models():
    torch.manual_seed(0)
    return [
        nn.Sequential(nn.LeakyReLU(0.1, inplace=True), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)),
        nn.Sequential(nn.ReLU(inplace=True), nn.Linear(3, 1)),
        _ScalesItsInput(),
    ]


def _fresh_input_loop(model, plane, x, y, w1, w2):
    """Per point, in float64: the model on a fresh copy of the data, as one forward pass sees it."""
    probe = copy.deepcopy(model).double()
    parameters = dict(probe.named_parameters())
    out = np.zeros((len(w1), len(w2)))
    with torch.no_grad():
        for i, a in enumerate(w1):
            for j, b in enumerate(w2):
                for name, value in plane.to(torch.device("cpu"), torch.float64).params(a, b).items():
                    parameters[name].copy_(value)
                out[i, j] = ((probe(torch.tensor(x)) - torch.tensor(y)) ** 2).mean().item()
    return out


@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_a_model_that_writes_into_its_inputs_sees_the_data_as_given_at_every_point(rng, index, method):
    """The engine runs many forward passes on the same inputs: writes must neither compound
    nor reach the caller's arrays (float64, one chunk or many)."""
    model = _written_input_models()[index]
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(60, 1))
    kept = x.copy()
    plane = fs.random_plane(model, seed=1)
    w1, w2 = np.linspace(-1, 1, 3), np.linspace(-1, 1, 4)
    expected = _fresh_input_loop(model, plane, x, y, w1, w2)
    options = {"plane": plane, "dtype": "float64", "method": method}
    assert_close(fs.loss_surface(model, (x, y), w1, w2, **options).loss, expected, rtol=1e-12)
    batches = [(x[s : s + 7], y[s : s + 7]) for s in range(0, len(x), 7)]  # a chunk each
    assert_close(fs.loss_surface(model, batches, w1, w2, tile_points=2, **options).loss, expected, rtol=1e-12)
    evaluator = fs.Evaluator(model, (torch.tensor(x), torch.tensor(y)), **options)
    for _ in range(2):
        assert_close(evaluator.surface(w1, w2).loss, expected, rtol=1e-12)
    assert np.array_equal(x, kept)
