"""``train_sgd``'s two routes (NumPy for a ``Linear → Tanh → Linear`` stack, autograd for the
rest) against the loop they replaced, ``tests/reference/training.py``, on random starts,
learning rates and shuffling seeds."""

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.analysis import _descent
from fastsurface.engine._losses import resolve_loss
from tests.helpers import DEVICES, assert_close, small_mlp
from tests.reference.training import reference_sgd_path

# Both routes compute the reference's products; only sums may be added in another order, a
# unit in the last place now and then, which SGD carries along: float32 paths of values
# around 1 agree to about 1e-6 (a few float32 units) after thousands of steps, float64 to 1e-15.
TOLERANCE = {torch.float32: 4e-6, torch.float64: 1e-12}
ROUTES = ["numpy", "autograd"]
# Full-length reference paths (thousands of steps per case): outside the quick tier.
pytestmark = pytest.mark.slow


def _seed_problem(rng, samples=400):
    model = fs.ANN(1, 1, 1)
    return model, fs.default_plane(model), fs.piecewise_dataset(samples, seed=int(rng.integers(1000)))


def _seed_on_a_random_plane(rng, samples=400):
    """Both coordinates move both weights: the two-weight route's projection and update."""
    model = fs.ANN(1, 1, 1)
    return model, fs.random_plane(model, seed=int(rng.integers(1000))), fs.piecewise_dataset(samples)


def _mlp_problem(rng, samples=300):
    torch.manual_seed(int(rng.integers(1000)))
    model = small_mlp()
    plane = fs.random_plane(model, seed=int(rng.integers(1000)), one_dim="keep")  # biases move too
    x, y = rng.normal(size=(2, samples, 3)).astype(np.float32)
    return model, plane, (x, y[:, :2])


PROBLEMS = {
    "seed": _seed_problem,
    "seed-random-plane": _seed_on_a_random_plane,
    "mlp": _mlp_problem,
}


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch):
    """The route under test: the recognised stack takes NumPy; with recognition off, autograd."""
    if request.param == "autograd":
        monkeypatch.setattr(_descent, "tanh_stack", lambda module: None)
    return request.param


def _path(trajectory):
    return np.stack([trajectory.w1, trajectory.w2], axis=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_every_step_matches_the_reference(rng, route, problem, dtype):
    model, plane, train = PROBLEMS[problem](rng)
    start = tuple(rng.uniform(-1.5, 1.5, size=2).tolist())
    options = {"lr": float(10 ** rng.uniform(-3, -1.5)), "epochs": 3, "start": start, "batch_size": 32}
    seed = int(rng.integers(2**31))
    path = fs.train_sgd(model, train, train, plane=plane, seed=seed, record="step", dtype=dtype, **options)
    expected, steps = reference_sgd_path(model, train, plane, seed=seed, record="step", dtype=dtype, **options)
    assert path.step.tolist() == steps.tolist()
    assert_close(_path(path), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    if route == "autograd" and problem == "seed":  # each coordinate moves one weight: the same sums
        assert np.array_equal(_path(path), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_main_jobs_path_matches_the_reference(seed_split, dtype):
    """The 3,125 steps of ``fastsurface run``: 25 epochs of 8,000 samples in batches of 64."""
    train, test = seed_split
    model = fs.ANN(1, 1, 1)
    path = fs.train_sgd(model, train, test, dtype=dtype)
    expected, steps = reference_sgd_path(
        model, train, fs.default_plane(model), lr=1e-2, epochs=25, start=(-1, -1), dtype=dtype
    )
    assert path.step.tolist() == steps.tolist()
    assert_close(_path(path), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_a_loader_gives_the_references_path(rng, route):
    model, plane, (x, y) = _mlp_problem(rng, samples=96)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=20
    )
    path = fs.train_sgd(model, loader, (x, y), plane=plane, lr=0.02, epochs=2, record="step")
    expected, steps = reference_sgd_path(model, list(loader), plane, lr=0.02, epochs=2, start=(-1, -1), record="step")
    assert path.step.tolist() == steps.tolist() == list(range(11))
    assert_close(_path(path), expected, rtol=TOLERANCE[torch.float32], atol=TOLERANCE[torch.float32])


@pytest.mark.parametrize("device", DEVICES)
def test_each_device_matches_the_reference_on_the_cpu(rng, device):
    model, plane, train = _seed_problem(rng)
    path = fs.train_sgd(model, train, train, lr=0.02, epochs=2, device=device, dtype=torch.float64)
    expected, _ = reference_sgd_path(model, train, plane, lr=0.02, epochs=2, start=(-1, -1), dtype=torch.float64)
    assert_close(_path(path), expected, rtol=TOLERANCE[torch.float64], atol=TOLERANCE[torch.float64])


def test_both_routes_report_the_same_divergence(monkeypatch):
    train = fs.piecewise_dataset(300)
    messages = []
    for recognise in (_descent.tanh_stack, lambda module: None):
        monkeypatch.setattr(_descent, "tanh_stack", recognise)
        with pytest.raises(fs.FastsurfaceError, match="makes SGD diverge") as error:
            fs.train_sgd(fs.ANN(1, 1, 1), train, train, lr=1e12, epochs=3)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def _descent_for(model, loss="mse", device="cpu"):
    plane = fs.random_plane(model, one_dim="keep").to(torch.device(device), torch.float32)
    return _descent.plane_descent(model.to(device), plane, resolve_loss(loss), lr=0.1, start=(0.0, 0.0))


def _sequential(*layers):
    return nn.Sequential(*layers)


def _tied():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    return model


class _Linear(nn.Linear):
    pass


def _hooked():
    model = small_mlp()
    model[0].register_forward_hook(lambda module, inputs, output: 2 * output)
    return model


def _replaced_forward():
    model = small_mlp()
    model[2].forward = lambda x: x.sum(dim=-1, keepdim=True).repeat(1, 2)
    return model


@pytest.mark.parametrize(
    ("make", "route"),
    [
        pytest.param(lambda: fs.ANN(1, 1, 1), "two-weight", id="seed"),
        pytest.param(lambda: _sequential(nn.Linear(1, 1), nn.Tanh(), nn.Linear(1, 1)), "numpy", id="scalar-biases"),
        pytest.param(lambda: fs.ANN(2, 5, 3), "numpy", id="wider-ann"),
        pytest.param(small_mlp, "numpy", id="tanh-mlp-with-biases"),
        pytest.param(
            lambda: _sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)), "numpy", id="one-bias"
        ),
        pytest.param(lambda: _sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), "autograd", id="relu"),
        pytest.param(lambda: _sequential(_Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), "autograd", id="linear-subclass"),
        pytest.param(
            lambda: _sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Identity()), "autograd", id="longer"
        ),
        pytest.param(_tied, "autograd", id="tied-weights"),
        pytest.param(_hooked, "autograd", id="forward-hook"),
        pytest.param(_replaced_forward, "autograd", id="instance-forward"),
    ],
)
def test_the_numpy_route_takes_only_plain_tanh_stacks(make, route):
    descent = _descent_for(make())
    routes = {"two-weight": _descent.TwoWeightDescent, "numpy": _descent.TanhStackDescent}
    assert type(descent) is routes.get(route, _descent.AutogradDescent)


def test_a_weight_normed_layer_and_a_global_hook_take_autograd():
    model = small_mlp()
    nn.utils.parametrizations.weight_norm(model[0])
    assert isinstance(_descent_for(model), _descent.AutogradDescent)
    handle = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: None)
    try:
        assert isinstance(_descent_for(small_mlp()), _descent.AutogradDescent)
    finally:
        handle.remove()
    assert isinstance(_descent_for(small_mlp()), _descent.TanhStackDescent)


def test_other_losses_take_autograd():
    assert isinstance(_descent_for(small_mlp(), loss="cross_entropy"), _descent.AutogradDescent)
    own = lambda prediction, target: (prediction - target).square().mean(dim=1)  # noqa: E731
    assert isinstance(_descent_for(small_mlp(), loss=own), _descent.AutogradDescent)


def test_a_hooked_model_trains_as_the_reference_does(rng):
    """The hook doubles the first layer's output: only autograd on the model sees it."""
    model, plane, train = _mlp_problem(rng)
    model[0].register_forward_hook(lambda module, inputs, output: 2 * output)
    path = fs.train_sgd(model, train, train, plane=plane, lr=0.01, epochs=2)
    expected, _ = reference_sgd_path(model, train, plane, lr=0.01, epochs=2, start=(-1, -1))
    assert_close(_path(path), expected, rtol=TOLERANCE[torch.float32], atol=TOLERANCE[torch.float32])
