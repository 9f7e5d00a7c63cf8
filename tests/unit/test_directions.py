import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import fastsurface as fs
from fastsurface.engine._losses import resolve_loss
from tests.helpers import SMALL_MODELS as MODELS
from tests.helpers import assert_close, small_cnn, small_mlp


def _setup(name, rng, samples=48):
    make, shape = MODELS[name]
    torch.manual_seed(int(rng.integers(1 << 31)))
    models = [make() for _ in range(3)]
    for model in models:  # non-zero norm biases and scales, so every direction is non-trivial
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.as_tensor(rng.normal(0, 0.1, p.shape), dtype=p.dtype))
    x = rng.normal(size=(samples, *shape)).astype(np.float32)
    y = rng.normal(size=(samples, 2)).astype(np.float32)
    return models, (x, y)


def _looped_surface(model, plane, data, a_values, b_values, loss="mse"):
    """One ``load_state_dict`` and one full forward pass per point, parameters built in float64."""
    per_sample = resolve_loss(loss).per_sample
    copy_ = copy.deepcopy(model).eval()
    x, y = (torch.as_tensor(t) for t in data)
    state = copy_.state_dict()
    surface = np.zeros((len(a_values), len(b_values)))
    for i, a in enumerate(a_values):
        for j, b in enumerate(b_values):
            for name in plane.origin:
                value = plane.origin[name].double() + a * plane.first[name].double() + b * plane.second[name].double()
                state[name] = value.to(state[name].dtype)
            copy_.load_state_dict(state)
            with torch.no_grad():
                surface[i, j] = per_sample(copy_(x), y).double().mean().item()
    return surface


def _planes(models, data):
    origin, first, second = models
    path = fs.ParameterPath.from_models([*models, copy.deepcopy(first)], steps=[0, 1, 2, 3])
    return {
        "interpolation": fs.interpolation_plane(origin, first, second),
        "random_filter": fs.random_plane(origin, seed=1),
        "random_layer_keep": fs.random_plane(origin, seed=2, normalization="layer", one_dim="keep"),
        "random_model_orthogonal": fs.random_plane(origin, seed=3, normalization="model", orthogonal=True),
        "random_none_keep": fs.random_plane(origin, seed=4, normalization=None, one_dim="keep"),
        "pca": fs.pca_plane(path).plane,
        "hessian": fs.hessian_plane(origin, data, iterations=8).plane,
    }


@pytest.mark.slow
@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_plane_matches_a_load_state_dict_loop(rng, model_name):
    models, data = _setup(model_name, rng)
    a_values, b_values = np.array([-0.7, 0.0, 0.4, 1.1]), np.array([-0.5, 0.3, 0.9])
    for plane in _planes(models, data).values():
        model = models[0]
        surface = fs.loss_surface(model, data, a_values, b_values, plane=plane, device="cpu")
        expected = _looped_surface(model, plane, data, a_values, b_values)
        assert_close(surface.loss, expected, rtol=1e-5)


@pytest.mark.parametrize("model_name", ["cnn", "layer_norm"])
def test_filter_norms_equal_the_weights_filter_norms(rng, model_name):
    (model, _, _), _ = _setup(model_name, rng)
    plane = fs.random_plane(model, seed=int(rng.integers(100)), normalization="filter", one_dim="keep")
    for name, weight in model.named_parameters():
        for direction in (plane.first[name], plane.second[name]):
            if weight.ndim <= 1:
                assert torch.equal(direction, weight.detach().double())
            else:
                dims = tuple(range(1, weight.ndim))
                assert_close(
                    torch.linalg.vector_norm(direction, dim=dims),
                    torch.linalg.vector_norm(weight.detach().double(), dim=dims),
                    rtol=1e-12,
                )


def test_layer_and_model_norms_and_zeroed_one_dim_parameters(rng):
    (model, _, _), _ = _setup("layer_norm", rng)
    weights = {n: p.detach().double() for n, p in model.named_parameters()}
    layer = fs.random_plane(model, seed=5, normalization="layer", one_dim="zero")
    assert set(layer.origin) == {n for n, w in weights.items() if w.ndim > 1}
    for name, direction in layer.first.items():
        assert_close(direction.norm(), weights[name].norm(), rtol=1e-12)
    whole = fs.random_plane(model, seed=5, normalization="model", one_dim="keep")
    total = torch.sqrt(sum(w.square().sum() for w in weights.values()))
    assert_close(torch.sqrt(sum(d.square().sum() for d in whole.first.values())), total, rtol=1e-12)


def test_random_planes_are_seeded_and_leave_global_state_alone():
    model = small_mlp()
    state = torch.random.get_rng_state()
    first, second = fs.random_plane(model, seed=7), fs.random_plane(model, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first.first[n], second.first[n]) for n in first.first)
    other = fs.random_plane(model, seed=8)
    assert not torch.equal(first.first["0.weight"], other.first["0.weight"])


def test_orthogonal_second_direction():
    plane = fs.random_plane(small_cnn(), seed=0, normalization="filter", orthogonal=True)
    dot = sum((plane.first[n] * plane.second[n]).sum() for n in plane.first)
    assert abs(float(dot)) < 1e-12


def test_axis_aligned_planes_on_the_seed_model_give_the_engine_surface_exactly(seed_split):
    _, test = seed_split
    w1, w2 = fs.axis(-2, 2, 0.25), fs.axis(-1.5, 2, 0.5)
    reference = fs.loss_surface(fs.ANN(1, 1, 1), test, w1, w2, device="cpu").loss
    corners = []
    for values in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
        model = fs.ANN(1, 1, 1)
        with torch.no_grad():
            model.net.Layer_1.weight.fill_(values[0])
            model.net.Layer_2.weight.fill_(values[1])
        corners.append(model)
    plane = fs.interpolation_plane(*corners)
    surface = fs.loss_surface(corners[0], test, w1, w2, plane=plane, device="cpu")
    np.testing.assert_array_equal(surface.loss, reference)


def test_hessian_plane_finds_the_top_two_eigenpairs(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(40, 1))
    result = fs.hessian_plane(model, (x, y), iterations=40)
    theta = {n: p.detach().double() for n, p in model.named_parameters()}
    names, sizes = list(theta), [t.numel() for t in theta.values()]
    module = copy.deepcopy(model).double()

    def loss(flat):
        params = {n: p.reshape(theta[n].shape) for n, p in zip(names, torch.split(flat, sizes), strict=True)}
        prediction = functional_call(module, params, (torch.as_tensor(x),))
        return (prediction - torch.as_tensor(y)).square().mean()

    values, vectors = torch.linalg.eigh(jacrev(jacrev(loss))(torch.cat([t.reshape(-1) for t in theta.values()])))
    assert_close(result.eigenvalues, values.flip(0)[:2], rtol=1e-8)
    for k, direction in enumerate((result.plane.first, result.plane.second)):
        found = torch.cat([direction[n].reshape(-1) for n in names])
        assert abs(float(found @ vectors[:, -1 - k])) == pytest.approx(1.0, abs=1e-8)


def test_a_repeated_top_eigenvalue_is_found_twice(rng):
    """MSE of a linear map with two outputs: every Hessian eigenvalue appears twice (one
    copy per output), which one Krylov space cannot show."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    result = fs.hessian_plane(model, (x, y), iterations=10)
    inputs = np.hstack([x, np.ones((30, 1))])
    per_output = np.linalg.eigvalsh(inputs.T @ inputs / 30)  # the Hessian is this, once per output
    assert_close(result.eigenvalues, np.full(2, per_output[-1]), rtol=1e-10)
    first, second = (
        torch.cat([d[n].reshape(-1) for n in ("weight", "bias")]) for d in (result.plane.first, result.plane.second)
    )
    assert abs(float(first @ second)) < 1e-10


def test_the_eigenvalues_come_in_decreasing_order_even_with_few_steps(rng):
    x, y = rng.normal(size=(30, 1, 6, 6)), rng.integers(0, 2, size=30)
    for seed in range(8):
        torch.manual_seed(seed)
        values = fs.hessian_plane(small_cnn(), (x, y), loss="cross_entropy", iterations=2, seed=seed).eigenvalues
        assert values[0] >= values[1]


def test_lines_match_the_loop_and_ignore_the_second_coordinate(rng):
    (start, end, _), data = _setup("mlp", rng)
    t = np.array([-0.5, 0.0, 0.5, 1.0])
    for line in (fs.interpolation_line(start, end), fs.random_line(start, seed=3)):
        result = fs.loss_line(start, data, t, line=line, device="cpu")
        assert_close(result.loss, _looped_surface(start, line, data, t, [0.0])[:, 0], rtol=1e-5)
    end_loss = fs.loss_line(start, data, [1.0], line=fs.interpolation_line(start, end), device="cpu").loss
    assert_close(end_loss, _looped_surface(end, fs.interpolation_line(end, start), data, [0.0], [0.0])[0], rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda m: fs.random_plane(m, normalization="unit"), "`normalization`"),
        (lambda m: fs.random_plane(m, one_dim="drop"), "`one_dim`"),
        (lambda m: fs.interpolation_plane(m, small_cnn(), m), "`first`"),
        (lambda m: fs.hessian_plane(m, (np.zeros((4, 3)), np.zeros((4, 2))), iterations=1), "`iterations`"),
        (lambda m: fs.hessian_plane(m, (np.zeros((4, 3)), np.zeros(4))), "`data`"),
        (lambda m: fs.hessian_plane(m, (np.zeros((4, 5)), np.zeros((4, 2)))), "`model`"),
        (lambda m: fs.loss_line(m, (np.zeros((4, 3)), np.zeros((4, 2))), [[0.0]], line=fs.random_line(m)), "`t`"),
    ],
)
def test_bad_arguments_are_named(call, argument):
    with pytest.raises(fs.FastsurfaceError, match=argument):
        call(small_mlp())
