import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from tests.helpers import assert_close, numpy_seed_loss


class Squeezed(nn.Module):
    """The output layer's result is reshaped before it is returned: not the layer's output."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(2, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x))).reshape(-1, 1) * 1.0


class Tied(nn.Module):
    """The output layer's weight also shapes its input."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(3, 3, bias=False)

    def forward(self, x):
        return self.out(torch.tanh(x @ self.out.weight))


class Rescaled(nn.Module):
    """Reads the output layer's weight through ``.detach()`` before the layer: invisible to
    autograd, but the layer's input still depends on it."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)) / self.out.weight.detach().norm())


class ArgmaxScaled(Rescaled):
    """Scales the output layer's input by where its largest weight is: no gradient, and no
    change when every weight moves by the same amount."""

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)) * (1.0 + self.out.weight.argmax()))


class Switched(nn.Module):
    """Picks its head from the data: the probe sees one head, a later chunk the other."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out, self.other = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.hidden(x))
        return self.other(h) if bool((x.abs() > 2.5).any()) else self.out(h)


def _hooked(make_hook):
    """An MLP whose output layer gets ``make_hook`` (the deprecation of the original
    ``weight_norm`` is not what the tests look at)."""
    model = _mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        make_hook(model[4])
    return model


def _mlp(outputs=2, bias=True):
    return nn.Sequential(
        nn.Linear(3, 5, bias=bias), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, outputs, bias=bias)
    )


def _data(rng, n, inputs, outputs):
    return rng.normal(size=(n, inputs)), rng.normal(size=(n, outputs))


APPLIES = [
    ("seed w2", lambda: fs.ANN(1, 1, 1), None, 1, 1),
    ("a bare linear model", lambda: nn.Linear(3, 2), ("weight[0, 1]", "bias[1]"), 3, 2),
    ("hidden weight x output weight", lambda: _mlp(), ("0.weight[1, 2]", "4.weight[1, 3]"), 3, 2),
    ("hidden bias x output bias", lambda: _mlp(), ("2.bias[0]", "4.bias[0]"), 3, 2),
    ("output weight x hidden weight (swapped)", lambda: _mlp(), ("4.weight[0, 0]", "0.weight[0, 0]"), 3, 2),
    ("both in the output layer", lambda: _mlp(1), ("4.weight[0, 1]", "4.bias[0]"), 3, 1),
]


@pytest.mark.parametrize(("case", "make", "entries", "inputs", "outputs"), APPLIES, ids=[c[0] for c in APPLIES])
@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
@pytest.mark.parametrize(("dtype", "rtol"), [("float32", 1e-5), ("float64", 1e-10)])
def test_closed_form_equals_brute_force(rng, case, make, entries, inputs, outputs, reduction, dtype, rtol):
    torch.manual_seed(len(case))
    model = make()
    plane = fs.default_plane(model) if entries is None else fs.entry_plane(model, *entries)
    data = (rng.normal(1, 4.5, 777), rng.normal(size=777)) if inputs == 1 else _data(rng, 777, inputs, outputs)
    w1, w2 = np.sort(rng.uniform(-3, 3, 13)), np.sort(rng.uniform(-3, 3, 9))
    kwargs = {"plane": plane, "reduction": reduction, "batch_size": int(rng.integers(5, 100)), "dtype": dtype}
    fast = fs.loss_surface(model, data, w1, w2, method="auto", **kwargs)
    brute = fs.loss_surface(model, data, w1, w2, method="vmap", **kwargs)
    assert fast.method == "closed_form" and brute.method == "vmap"
    assert_close(fast.loss, brute.loss, rtol=rtol)


@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_closed_form_on_outputs_with_several_dimensions_per_sample(rng, reduction):
    # Samples of 5 positions x 3 features: the closed form orders each sample's output
    # elements feature first, and must weigh and target them in that same order.
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    plane = fs.random_plane(model, seed=1)
    second = {n: d if n.startswith("2.") else torch.zeros_like(d) for n, d in plane.second.items()}
    plane = fs.Plane(plane.origin, plane.first, second)
    data = rng.normal(size=(300, 5, 3)), rng.normal(size=(300, 5, 2))
    w1, w2 = np.linspace(-1, 1, 6), np.linspace(-1, 1.5, 4)
    kwargs = {"plane": plane, "reduction": reduction, "batch_size": 70, "dtype": "float64"}
    fast = fs.loss_surface(model, data, w1, w2, **kwargs)
    naive = fs.naive_loss_surface(model, data, w1, w2, plane=plane, reduction=reduction, batch_size=70)
    assert fast.method == "closed_form"
    assert_close(fast.loss, naive, rtol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_closed_form_with_dense_random_directions(rng, reduction):
    # d1 moves every parameter, output layer included; d2 moves the output layer's
    # weight and bias together.
    torch.manual_seed(3)
    model = _mlp(outputs=2)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    first = {name: torch.randn_like(p) for name, p in params.items()}
    second = {name: torch.randn_like(p) if name.startswith("4.") else torch.zeros_like(p) for name, p in params.items()}
    plane = fs.Plane(params, first, second)
    data = _data(rng, 500, 3, 2)
    w1, w2 = np.linspace(-1, 1, 11), np.linspace(-1.5, 1.5, 7)
    kwargs = {"plane": plane, "reduction": reduction, "batch_size": 64, "dtype": "float64"}
    fast = fs.loss_surface(model, data, w1, w2, **kwargs)
    brute = fs.loss_surface(model, data, w1, w2, method="vmap", **kwargs)
    assert fast.method == "closed_form"
    assert_close(fast.loss, brute.loss, rtol=1e-10)


def test_closed_form_with_a_dataloader_and_small_tiles(rng):
    x, y = rng.normal(size=500), rng.normal(size=500)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(x)[:, None], torch.tensor(y)[:, None]), batch_size=37
    )
    w = fs.axis(-2, 2, 0.1)
    fast = fs.loss_surface(fs.ANN(1, 1, 1), loader, w, w, reduction="batch_mean", tile_points=7, dtype="float64")
    slow = fs.naive_loss_surface(fs.ANN(1, 1, 1), (x, y), w[::5], w[::5], reduction="batch_mean", batch_size=37)
    assert fast.method == "closed_form"
    assert_close(fast.loss[::5, ::5], slow, rtol=1e-10)


NOT_APPLICABLE = [
    ("both in hidden layers", _mlp, ("0.weight[0, 0]", "2.weight[1, 1]"), "mse", 3, 2, "not the model's output"),
    (
        "activation after the output layer",
        lambda: nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()),
        ("0.weight[0, 0]", "0.bias[1]"),
        "mse",
        3,
        2,
        "not the model's output",
    ),
    (
        "in-place activation after the output layer",
        lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.ReLU(inplace=True)),
        ("0.weight[0, 0]", "2.weight[1, 1]"),
        "mse",
        3,
        2,
        "modified in place",
    ),
    (
        "weight-normed output layer",
        lambda: _hooked(nn.utils.weight_norm),
        ("0.weight[0, 0]", "4.weight_v[1, 1]"),
        "mse",
        3,
        2,
        "computed from other parameters",
    ),
    (
        "hook on the output layer",
        lambda: _hooked(lambda layer: layer.register_forward_hook(lambda _m, _i, out: out * 2)),
        ("0.weight[0, 0]", "4.weight[1, 1]"),
        "mse",
        3,
        2,
        "forward hooks",
    ),
    (
        "read through argmax",
        ArgmaxScaled,
        ("hidden.weight[0, 0]", "out.weight[0, 1]"),
        "mse",
        3,
        2,
        "depends on the layer's own",
    ),
    ("detached read", Rescaled, ("hidden.weight[0, 0]", "out.weight[0, 1]"), "mse", 3, 2, "depends on the layer's own"),
    ("reshaped output", Squeezed, ("hidden.weight[0, 0]", "out.weight[0, 1]"), "mse", 2, 1, "not the model's output"),
    ("tied weights", Tied, ("out.weight[0, 0]", "out.weight[1, 2]"), "mse", 3, 3, "depends on the layer's own"),
    ("cross-entropy", lambda: _mlp(3), ("0.weight[0, 0]", "4.weight[0, 0]"), "cross_entropy", 3, 0, "not 'mse'"),
]


@pytest.mark.parametrize(
    ("case", "make", "entries", "loss", "inputs", "outputs", "reason"),
    NOT_APPLICABLE,
    ids=[c[0] for c in NOT_APPLICABLE],
)
@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented:UserWarning")
def test_closed_form_is_not_chosen_where_it_does_not_apply(rng, case, make, entries, loss, inputs, outputs, reason):
    torch.manual_seed(0)
    model = make()
    plane = fs.entry_plane(model, *entries)
    x, y = _data(rng, 60, inputs, outputs)
    if loss == "cross_entropy":
        y = rng.integers(0, 3, size=60)
    w = np.linspace(-1, 1, 3)
    surface = fs.loss_surface(model, (x, y), w, w, plane=plane, loss=loss, dtype="float64")
    reference = fs.naive_loss_surface(model, (x, y), w, w, plane=plane, loss=loss, reduction="mean")
    assert surface.method == "vmap"
    assert_close(surface.loss, reference, rtol=1e-10)
    with pytest.raises(fs.FastsurfaceError, match=f"`method` 'closed_form' does not apply.*{reason}"):
        fs.loss_surface(model, (x, y), w, w, plane=plane, loss=loss, method="closed_form")


def test_a_global_forward_hook_keeps_the_closed_form_out(rng):
    """A hook for every module may change the output layer's output, which the slope
    ``F.linear(h, d₂W, d₂b)`` would not see."""
    torch.manual_seed(0)
    model = _mlp()
    plane = fs.entry_plane(model, "0.weight[0, 0]", "4.weight[1, 1]")
    x, y = _data(rng, 40, 3, 2)
    w = np.linspace(-1, 1, 3)
    handle = nn.modules.module.register_module_forward_hook(
        lambda module, _inputs, out: out * 2 if isinstance(module, nn.Linear) else None
    )
    try:
        surface = fs.loss_surface(model, (x, y), w, w, plane=plane, dtype="float64")
        reference = fs.naive_loss_surface(model, (x, y), w, w, plane=plane, reduction="mean")
        with pytest.raises(fs.FastsurfaceError, match="global forward hooks"):
            fs.loss_surface(model, (x, y), w, w, plane=plane, method="closed_form")
    finally:
        handle.remove()
    assert surface.method == "vmap"
    assert_close(surface.loss, reference, rtol=1e-10)


def test_listed_points_in_the_closed_form_match_the_grid_bit_for_bit(rng, seed_split):
    _, test = seed_split
    model = fs.ANN(1, 1, 1)
    w1, w2 = np.sort(rng.uniform(-3, 3, 11)), np.sort(rng.uniform(-3, 3, 7))
    grid = fs.loss_surface(model, test, w1, w2)
    picked = [(i, j) for i in range(11) for j in range(7) if rng.random() < 0.3]
    points = np.array([[w1[i], w2[j]] for i, j in picked])
    listed = fs.evaluate_points(model, fs.default_plane(model), test, points, method="closed_form")
    assert listed.method == "closed_form" and grid.method == "closed_form"
    assert np.array_equal(listed.loss.numpy(), [grid.loss[i, j] for i, j in picked])
    swapped = fs.entry_plane(model, "net.Layer_2.weight[0, 0]", "net.Layer_1.weight[0, 0]")  # affine in a
    transposed = fs.loss_surface(model, test, w2, w1, plane=swapped)
    assert np.array_equal(transposed.loss, grid.loss.T)
    on_swapped = fs.evaluate_points(model, swapped, test, points[:, ::-1], method="closed_form")
    assert np.array_equal(on_swapped.loss.numpy(), listed.loss.numpy())


@pytest.mark.parametrize("samples", [3000, 9000])
def test_listed_points_match_the_grid_bit_for_bit_whatever_the_tile_holds(rng, samples):
    """Two outputs: 6,000 elements (values in groups on the grid's tile, one group for a
    few listed values) and 18,000 (blocks of elements too)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    x, y = _data(rng, samples, 3, 2)
    plane = fs.entry_plane(model, "0.weight[0, 1]", "2.weight[1, 2]")
    w1, w2 = np.linspace(-1, 1, 80), np.linspace(-1, 1, 5)
    grid = fs.loss_surface(model, (x, y), w1, w2, plane=plane, method="closed_form", tile_points=80)
    points = np.array([(a, b) for a in w1[:5] for b in w2])
    listed = fs.evaluate_points(model, plane, (x, y), points, method="closed_form")
    assert np.array_equal(listed.loss.numpy(), grid.loss[:5].reshape(-1))


def test_a_deep_minimum_along_the_affine_coordinate_keeps_float64_accuracy(rng):
    """A linear probe: the model at (0, 1) differs from the origin in its output layer only
    and fits the targets up to noise of 1e-5, so the loss there is about 1e-10 against
    terms of order 1 about b = 0, which would cancel."""
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    probed, other = copy.deepcopy(init), copy.deepcopy(init)
    with torch.no_grad():
        for parameter in probed[2].parameters():
            parameter.add_(torch.randn_like(parameter))
        other[0].weight.add_(0.1 * torch.randn_like(other[0].weight))
    x = torch.tensor(rng.normal(size=(500, 3)))
    with torch.no_grad():
        y = probed(x) + 1e-5 * torch.tensor(rng.normal(size=(500, 2)))
    plane = fs.interpolation_plane(init, other, probed)
    w1, w2 = np.array([-0.1, 0.0, 0.1]), np.array([0.0, 0.5, 0.9, 1.0, 1.1])
    surface = fs.loss_surface(init, (x, y), w1, w2, plane=plane, dtype="float64")
    reference = fs.naive_loss_surface(init, (x, y), w1, w2, plane=plane, reduction="mean")
    assert surface.method == "closed_form" and surface.loss[1, 3] < 1e-9
    assert_close(surface.loss, reference, rtol=1e-10)


def test_listed_points_sharing_free_values_share_their_sums_and_match_the_reference(rng, seed_split):
    """The closed form's work is per free value: scattered points give it none to share, so
    ``auto`` compiles them instead once compiling pays; on grid lines it keeps them."""
    from fastsurface.engine._tiles import ListedPoints
    from fastsurface.engine.evaluate import _shares_free

    _, (x, y) = seed_split
    model, plane = fs.ANN(1, 1, 1), fs.default_plane(fs.ANN(1, 1, 1))
    scattered = rng.uniform(-2, 2, size=(40, 2))
    on_lines = np.stack([np.repeat([-1.0, 0.5], 20), rng.uniform(-2, 2, 40)], axis=1)
    for points, shares in ((scattered, False), (on_lines, True)):
        listed = ListedPoints(torch.from_numpy(points), torch.device("cpu"), torch.float64)
        assert _shares_free(listed, coordinate=1) is shares
        evaluation = fs.evaluate_points(model, plane, (x, y), points, dtype="float64")
        assert evaluation.method == "closed_form"
        assert_close(evaluation.loss, numpy_seed_loss(points[:, 0], points[:, 1], x, y).diagonal(), rtol=1e-12)


def test_a_model_whose_structure_follows_the_data_is_refused_on_the_chunk_that_shows_it(rng):
    """The probe (first samples) sees the plain head, the whole chunk the other one: the
    closed form says so instead of computing another model's loss."""
    torch.manual_seed(0)
    model = Switched()
    x, y = _data(rng, 50, 3, 2)
    x[:10] = np.clip(x[:10], -1, 1)
    x[40] = 3.0
    plane = fs.entry_plane(model, "hidden.weight[0, 0]", "out.weight[0, 1]")
    w = np.linspace(-1, 1, 3)
    for method in ("auto", "closed_form"):
        with pytest.raises(fs.FastsurfaceError, match="closed_form' does not apply to these data"):
            fs.loss_surface(model, (x, y), w, w, plane=plane, method=method)
    assert fs.loss_surface(model, (x, y), w, w, plane=plane, method="vmap").method == "vmap"


SHARED_CASES = {
    "seed": (lambda: fs.ANN(1, 1, 1), 1, None),
    "mlp": (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)), 3, None),
    "nested": (lambda: nn.Sequential(nn.Sequential(nn.Linear(1, 6), nn.Sigmoid()), nn.Linear(6, 1)), 1, None),
    "frozen-first": (
        lambda: nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)),
        2,
        ("2.weight", "4.weight"),
    ),
}


@pytest.mark.parametrize("name", sorted(SHARED_CASES))
def test_the_shared_closed_form_kernel_equals_the_per_value_one(rng, name):
    """On an ``nn.Sequential`` (or the seed's ANN) the closed form's predictions and slopes come
    from the shared forward pass; they equal the per-value forward pass's in float64."""
    from torch.func import vmap

    from fastsurface.engine import _closed_form

    make, inputs, moved = SHARED_CASES[name]
    torch.manual_seed(3)
    model = make().double().eval()
    if moved is None:
        plane = fs.random_plane(model, seed=2)
        parameters = dict(model.named_parameters())
        last = [n for n in parameters if n.startswith(list(parameters)[-1].rpartition(".")[0])]
        # The second direction only in the output layer, as the closed form needs.
        second = {n: d if n in last else torch.zeros_like(d) for n, d in plane.second.items()}
        plane = fs.Plane(plane.origin, plane.first, second)
    else:
        plane = fs.random_plane(model, seed=2)
        plane = fs.Plane(
            plane.origin,
            {n: d if n == moved[0] else torch.zeros_like(d) for n, d in plane.first.items()},
            {n: d if n == moved[1] else torch.zeros_like(d) for n, d in plane.second.items()},
        )
    x = torch.as_tensor(rng.normal(size=(40, inputs)))
    a = torch.as_tensor(rng.uniform(-2, 2, size=7))
    shared = _closed_form._shared_prediction_and_slope(model, plane)
    assert shared is not None
    per_value = vmap(_closed_form._prediction_and_slope(model, plane), in_dims=(0, None))
    with torch.no_grad():  # as the engine runs them
        assert_close(shared(a, x), per_value(a, x), rtol=1e-12, atol=1e-14)


def test_the_shared_closed_form_kernel_does_not_apply_where_the_plane_moves_only_the_output_layer(rng):
    from fastsurface.engine import _closed_form

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    plane = fs.entry_plane(model, "2.weight[0, 0]", "2.weight[0, 1]")
    assert _closed_form._shared_prediction_and_slope(model, plane) is None
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 1))
    w = np.linspace(-1, 1, 5)
    fast = fs.loss_surface(model, (x, y), w, w, plane=plane, method="closed_form", dtype="float64")
    brute = fs.loss_surface(model, (x, y), w, w, plane=plane, method="vmap", dtype="float64")
    assert_close(fast.loss, brute.loss, rtol=1e-10)
