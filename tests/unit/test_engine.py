import copy
import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastsurface as fs
from tests.helpers import assert_close, numpy_seed_loss


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_tile_and_chunk_sizes_do_not_change_the_result(seed_split, reduction):
    _, test = seed_split
    w1, w2 = fs.axis(-2, 2, 0.3), fs.axis(-1, 2, 0.2)
    kwargs = {"reduction": reduction, "device": "cpu", "dtype": torch.float64}
    reference = fs.loss_surface(fs.ANN(1, 1, 1), test, w1, w2, **kwargs).loss
    for tile in (1, 7, 64, 10_000):
        assert_close(
            fs.loss_surface(fs.ANN(1, 1, 1), test, w1, w2, tile_points=tile, **kwargs).loss, reference, rtol=1e-12
        )
    for budget in (2**12, 2**16, 2**30):  # small budgets cut the data into chunks too
        surface = fs.loss_surface(fs.ANN(1, 1, 1), test, w1, w2, memory_budget=budget, **kwargs)
        assert_close(surface.loss, reference, rtol=1e-12)


def test_a_dataloader_is_streamed_once_and_equals_the_pair(seed_split):
    _, (x, y) = seed_split
    dataset = TensorDataset(torch.tensor(x), torch.tensor(y).reshape(-1, 1))
    reads = []

    class CountingLoader(DataLoader):
        def __iter__(self):
            reads.append(1)
            return super().__iter__()

    loader = CountingLoader(dataset, batch_size=100)
    w1, w2 = fs.axis(-2, 2, 0.5), fs.axis(-2, 2, 0.25)
    for reduction in ("mean", "batch_mean"):
        streamed = fs.loss_surface(fs.ANN(1, 1, 1), loader, w1, w2, reduction=reduction, dtype="float64", tile_points=5)
        pair = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, reduction=reduction, batch_size=100, dtype="float64")
        assert_close(streamed.loss, pair.loss, rtol=1e-12)
    assert len(reads) == 2


def test_targets_that_would_broadcast_are_refused(seed_split):
    _, (x, y) = seed_split
    loader = DataLoader(TensorDataset(torch.tensor(x).reshape(-1, 1), torch.tensor(y)), batch_size=64)
    with pytest.raises(fs.FastsurfaceError, match=r"`data`.*broadcast"):
        fs.loss_surface(fs.ANN(1, 1, 1), loader, [0.0], [0.0])
    with pytest.raises(fs.FastsurfaceError, match=r"`data`.*broadcast"):
        fs.loss_surface(
            fs.ANN(1, 1, 2),
            (x, y),
            [0.0],
            [0.0],
            plane=fs.entry_plane(fs.ANN(1, 1, 2), "net.Layer_1.weight", "net.Layer_2.weight[1, 0]"),
        )


def test_the_model_is_not_modified_and_nothing_is_printed(seed_split):
    _, test = seed_split
    model = fs.ANN(1, 1, 1).train()
    before = copy.deepcopy(model.state_dict())
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        fs.loss_surface(model, test, [0.5], [0.5])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training
    assert out.getvalue() == "" and err.getvalue() == ""


def test_global_state_is_left_alone(seed_split):
    train, test = seed_split
    model = fs.ANN(1, 1, 1)  # nn.Linear's initialisation draws from the global generator
    torch_rng, numpy_rng = torch.get_rng_state(), np.random.get_state()[1].copy()
    threads, default = torch.get_num_threads(), torch.get_default_dtype()
    fs.loss_surface(model, test, [0.5, 1.0], [0.5], dtype="float64")
    fs.train_sgd(model, train, test, epochs=1)
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert np.array_equal(np.random.get_state()[1], numpy_rng)
    assert torch.get_num_threads() == threads and torch.get_default_dtype() == default


def test_torch_inputs_and_a_result_that_stays_a_tensor(seed_split):
    _, (x, y) = seed_split
    surface = fs.loss_surface(fs.ANN(1, 1, 1), (torch.tensor(x), torch.tensor(y)), torch.tensor([0.0, 1.0]), [2.0])
    assert isinstance(surface.loss_tensor, torch.Tensor) and surface.loss_tensor.dtype == torch.float64
    assert_close(surface.loss, numpy_seed_loss(np.array([0.0, 1.0]), np.array([2.0]), x, y), rtol=1e-6)


def test_evaluate_points_agrees_with_the_grid(seed_split):
    _, test = seed_split
    model = fs.ANN(1, 1, 1)
    grid = fs.loss_surface(model, test, [-0.5, 0.75], [1.25, 2.0], dtype="float64")
    points = np.array([[0.75, 2.0], [-0.5, 1.25]])
    listed = fs.evaluate_points(model, fs.default_plane(model), test, points, dtype="float64")
    assert_close(listed.loss, [grid.loss[1, 1], grid.loss[0, 0]], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"reduction": "sum"}, "reduction"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "float16"}, "dtype"),
        ({"memory_budget": -1}, "memory_budget"),
        ({"tile_points": 0}, "tile_points"),
        ({"method": "fast"}, "method"),
        ({"memory_budget": 8}, "memory_budget"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(seed_split, kwargs, name):
    _, test = seed_split
    with pytest.raises(fs.FastsurfaceError, match=f"`{name}`"):
        fs.loss_surface(fs.ANN(1, 1, 1), test, [0.0], [0.0], **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(seed_split):
    with pytest.raises(fs.FastsurfaceError, match=r"`device`.*CUDA is not available"):
        fs.loss_surface(fs.ANN(1, 1, 1), seed_split[1], [0.0], [0.0], device="cuda")


def test_models_without_a_default_plane_need_one(seed_split):
    with pytest.raises(fs.FastsurfaceError, match="`plane` is required"):
        fs.loss_surface(fs.ANN(1, 2, 1), seed_split[1], [0.0], [0.0])


@pytest.mark.parametrize(
    ("first", "match"),
    [
        ("nope.weight[0, 0]", "names no parameter"),
        ("net.Layer_1.weight[3, 0]", "does not fit"),
        ("net.Layer_1.weight[[", "must look like"),
    ],
)
def test_entry_plane_refuses_unknown_entries(first, match):
    with pytest.raises(fs.FastsurfaceError, match=match):
        fs.entry_plane(fs.ANN(1, 2, 1), first, "net.Layer_2.weight[0, 1]")


def test_non_finite_data_is_refused():
    with pytest.raises(fs.FastsurfaceError, match=r"`data`.*finite"):
        fs.loss_surface(fs.ANN(1, 1, 1), (np.array([1.0, np.nan]), np.zeros(2)), [0.0], [0.0])


def test_reversed_views_of_numpy_arrays_are_accepted(seed_split):
    _, (x, y) = seed_split
    reversed_view = fs.loss_surface(fs.ANN(1, 1, 1), (x[::-1], y[::-1]), [0.5], [1.0], dtype="float64")
    points = np.array([[1.0, 0.5]])[:, ::-1]  # negative strides
    listed = fs.evaluate_points(fs.ANN(1, 1, 1), fs.default_plane(fs.ANN(1, 1, 1)), (x, y), points, dtype="float64")
    assert_close(reversed_view.loss[0, 0], listed.loss[0], rtol=1e-12)


def _auto_compiles(model: nn.Module, data: object, monkeypatch) -> bool:
    """Whether ``auto`` would compile ``model`` on a 3 x 3 grid on the CPU, the work threshold aside."""
    from fastsurface.engine import evaluate
    from fastsurface.engine._stream import Chunk
    from fastsurface.engine._tiles import GridPoints

    monkeypatch.setattr(evaluate, "COMPILE_THRESHOLD", 0)
    points = GridPoints(np.zeros(3), np.zeros(3), torch.device("cpu"), torch.float32)
    chunk = Chunk(torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(2), 2, 1)
    return evaluate._worth_compiling(model, fs.random_plane(model), points, data, chunk)


def _toolchain() -> bool:
    from fastsurface.engine._kernels import compile_available

    return compile_available(torch.device("cpu"))


def test_auto_compiles_no_convolution(monkeypatch, seed_split):
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 1))
    assert not _auto_compiles(cnn, seed_split[1], monkeypatch)
    mlp = nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 1))
    assert _auto_compiles(mlp, seed_split[1], monkeypatch) == _toolchain()


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Sigmoid, nn.GELU])
def test_auto_leaves_the_batched_shared_route_to_vmap_without_a_tanh(monkeypatch, seed_split, activation):
    """The shared route's batched products beat the compiled kernel unless its faster tanh
    has work to do; a model outside that route (here a custom forward) still compiles."""
    mlp = nn.Sequential(nn.Linear(1, 4), activation(), nn.Linear(4, 1))
    assert not _auto_compiles(mlp, seed_split[1], monkeypatch)

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(1, 4), activation(), nn.Linear(4, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    assert _auto_compiles(Custom(), seed_split[1], monkeypatch) == _toolchain()
