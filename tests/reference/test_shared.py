"""The shared route (frozen prefix, shared first moving layer) against the float64 naive
per-point loop, and where it must not apply."""

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.engine._shared import TileBuffers, shared_forward
from tests.helpers import assert_close


def _batch_norm_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():  # running statistics other than (0, 1), so eval mode is visible
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model


def _nested_cnn() -> nn.Module:
    features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular"), nn.Tanh(), nn.MaxPool2d(2))
    return nn.Sequential(features, nn.Sequential(nn.Flatten(), nn.Linear(27, 2)))


def _first_not_linear() -> nn.Module:
    return nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


# name -> (model, input shape, plane parameters or None for all, expected cut: (prefix layers, shared layer?))
CASES = {
    "mlp": (lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)), (3,), None, (0, True)),
    "cnn": (_nested_cnn, (1, 6, 6), None, (0, True)),
    "batch_norm_frozen": (_batch_norm_model, (3,), ["3.weight", "3.bias"], (3, True)),
    "batch_norm_all": (_batch_norm_model, (3,), None, (0, True)),
    "first_not_linear_later": (_first_not_linear, (3,), ["1.weight", "1.bias", "3.weight"], (1, True)),
    "bias_only": (lambda: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)), (3,), ["0.bias"], (0, True)),
    "norm_moves_after_prefix": (
        lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.LayerNorm(5), nn.Linear(5, 2)),
        (3,),
        ["2.weight", "3.weight"],
        (2, False),
    ),
}


def _plane(model: nn.Module, names: list[str] | None) -> fs.Plane:
    """Seeded Gaussian directions in ``names`` (every parameter where ``None``), biases included."""
    generator = torch.Generator().manual_seed(0)
    parameters = {n: p.detach() for n, p in model.named_parameters() if names is None or n in names}

    def direction() -> dict[str, torch.Tensor]:
        return {n: 0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in parameters.items()}

    return fs.Plane({n: p.clone() for n, p in parameters.items()}, direction(), direction())


def _data(rng: np.random.Generator, shape: tuple[int, ...], loss: str) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(37, *shape))
    y = rng.integers(0, 2, size=37) if loss == "cross_entropy" else rng.normal(size=(37, 2))
    return x, y


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][3] is not None])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_the_shared_route_equals_the_naive_loop_in_float64(rng, name, loss):
    factory, shape, names, cut = CASES[name]
    torch.manual_seed(0)
    model = factory().double()
    plane = _plane(model, names)
    forward = shared_forward(model.eval(), plane.to(torch.device("cpu"), torch.float64))
    assert forward is not None and (len(forward.prefix), forward.shared is not None) == cut
    w1, w2 = np.sort(rng.uniform(-1, 1, 5)), np.sort(rng.uniform(-1, 1, 4))
    data = _data(rng, shape, loss)
    options = {"plane": plane, "loss": loss, "reduction": "batch_mean", "batch_size": 10}
    surface = fs.loss_surface(
        model, data, w1, w2, dtype="float64", device="cpu", method="vmap", memory_budget=2**16, **options
    )
    naive = fs.naive_loss_surface(model, data, w1, w2, **options)
    assert_close(surface.loss, naive, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["mlp", "cnn", "batch_norm_frozen"])
def test_the_shared_route_in_float32_is_within_rounding_of_float64(rng, name):
    factory, shape, names, _ = CASES[name]
    torch.manual_seed(0)
    model = factory()
    plane = _plane(model, names)
    w = np.linspace(-1, 1, 6)
    data = _data(rng, shape, "mse")
    surface = fs.loss_surface(model, data, w, w, plane=plane, device="cpu", method="vmap")
    naive = fs.naive_loss_surface(model, data, w, w, plane=plane, reduction="mean")
    assert_close(surface.loss, naive, rtol=2e-5)


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * 2


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    model[0].register_forward_hook(lambda _m, _i, output: output * 2)
    return model


@pytest.mark.parametrize(
    ("factory", "names"),
    [
        (_first_not_linear, None),  # the first moving layer is a LayerNorm at the start: nothing shared
        (lambda: nn.Sequential(nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 2)), None),
        (_Custom, None),  # not an nn.Sequential: its forward may do anything
        (_hooked, None),  # a hook may change the shared layer's output
        (lambda: nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))), None),
    ],
)
def test_sharing_is_refused_where_it_could_change_results(factory, names):
    torch.manual_seed(0)
    model = factory()
    assert shared_forward(model.eval(), _plane(model, names)) is None


def test_a_tied_weight_in_a_later_layer_moves_with_the_shared_layer(rng):
    torch.manual_seed(0)
    first, last = nn.Linear(4, 4), nn.Linear(4, 4)
    last.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), last).double()
    plane = _plane(model, None)
    w = np.linspace(-1, 1, 4)
    data = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    surface = fs.loss_surface(model, data, w, w, plane=plane, dtype="float64", device="cpu", method="vmap")
    naive = fs.naive_loss_surface(model, data, w, w, plane=plane, reduction="mean")
    assert_close(surface.loss, naive, rtol=1e-12)


def test_layers_in_training_mode_are_shared_only_where_the_mode_changes_nothing():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)).train()
    dropout_first = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)).train()
    assert shared_forward(plain, _plane(plain, None)) is not None
    assert shared_forward(dropout_first, _plane(dropout_first, None)) is None
    assert shared_forward(dropout_first.eval(), _plane(dropout_first, None)) is not None


def test_the_loss_landscapes_drop_in_shares_the_first_layer_with_the_same_numbers():
    import fastsurface.compat.loss_landscapes as drop_in

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 1, dtype=torch.float64)
    metric = drop_in.metrics.Loss(nn.MSELoss(), x, y)
    torch.manual_seed(1)
    shared = drop_in.random_plane(model, metric, steps=4)
    torch.manual_seed(1)
    wrapped = drop_in.random_plane(drop_in.GeneralModelWrapper(model, [model], lambda m, v: m(v)), metric, steps=4)
    assert_close(shared, wrapped, rtol=1e-12)  # a general wrapper's forward is opaque: per point, unshared


@pytest.mark.parametrize("kernel", [1, 2, 3, (2, 3)])
def test_tiling_max_pools_run_as_maxima_of_slices_equal_to_the_layer_bit_for_bit(kernel):
    from torch.func import vmap

    from fastsurface.engine._shared import _is_tiled_max_pool, _tiled_max_pool

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 5, 7, 9, generator=generator)  # points x samples x channels x odd sizes
    x[0, 0, 0, 0, 0], x[1, 1, 1, 2, 3], x[2, 2, 2, 1, 1] = float("nan"), float("inf"), float("-inf")
    layer = nn.MaxPool2d(kernel)
    assert _is_tiled_max_pool(layer)
    for fast, slow in (
        (_tiled_max_pool(layer, x[0]), layer(x[0])),
        (vmap(lambda h: _tiled_max_pool(layer, h))(x), vmap(layer)(x)),
    ):
        assert fast.shape == slow.shape
        assert torch.equal(fast.isnan(), slow.isnan()) and torch.equal(fast.nan_to_num(7.0), slow.nan_to_num(7.0))


@pytest.mark.parametrize(
    "layer",
    [
        nn.MaxPool2d(3, 2),
        nn.MaxPool2d(2, padding=1),
        nn.MaxPool2d(2, dilation=2),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.MaxPool2d(2, return_indices=True),
    ],
)
def test_overlapping_or_padded_max_pools_keep_the_layer(layer):
    from fastsurface.engine._shared import _is_tiled_max_pool

    assert not _is_tiled_max_pool(layer)


def test_kept_tile_buffers_give_the_numbers_of_fresh_tensors_on_tiles_that_grow_and_shrink():
    """The batched layers write into two buffers kept across tiles: tiles of 3, 40, then 7
    points (growing the buffers, then using part of them) equal fresh tensors bit for bit,
    and the smaller tile reuses the grown buffers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 2)).eval()
    forward = shared_forward(model, fs.random_plane(model, seed=1).to(torch.device("cpu"), torch.float32))
    assert forward is not None and forward.batched
    with torch.no_grad():  # as the engine runs (out= arguments refuse autograd)
        shared = forward.share(torch.randn(50, 5))
        buffers = TileBuffers()
        for count in (3, 40, 7):
            a, b = torch.randn(count), torch.randn(count)
            kept = forward.predictions(a, b, shared, buffers)
            assert torch.equal(kept, forward.predictions(a, b, shared))
            assert kept.shape == (count, 50, 2)
        grown = [buffers.take(slot, (1,), shared).data_ptr() for slot in (0, 1)]
        forward.predictions(torch.randn(2), torch.randn(2), shared, buffers)
        assert [buffers.take(slot, (1,), shared).data_ptr() for slot in (0, 1)] == grown
