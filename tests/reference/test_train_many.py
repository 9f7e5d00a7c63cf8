"""``train_many`` against runs one at a time: ``train_sgd`` (plane coordinates, SGD) and
``record_path`` (full parameters, any elementwise optimiser), on the seed model and an MLP.

Routes: ``vmap`` runs torch's own kernels, so its runs equal the one-at-a-time runs to
float32 rounding (on this CPU: bit for bit); ``compiled`` fuses each step and uses a
3-ulp ``tanh``, so its runs agree to float32 rounding over the few steps tested here
(long runs near a separatrix amplify any rounding difference: see the README).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from tests.helpers import assert_close, cuda

EPOCHS = 3
FLOAT32, FLOAT64 = 1e-6, 1e-12
# The compiled route: a few ulps a step (its tanh is within 4e-7), grown by momentum over 24 steps.
COMPILED = 5e-5
# Starts on both sides of the seed's separatrix (w1 = 0), none near it.
SEED_STARTS = np.array([[-1.0, -1.0], [1.2, 0.5], [1.5, -0.4], [-1.6, 1.1], [1.9, 1.9]])
OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-2),
    "momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
    "nesterov": lambda p: torch.optim.SGD(p, lr=5e-3, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
}


@pytest.fixture(scope="module")
def split():
    """The seed data, 600 samples: 480 to train on (8 batches of 64), 120 to test."""
    return fs.train_test_split(*fs.piecewise_dataset(600), test_size=0.2, seed=0)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


@pytest.fixture(scope="module")
def mlp_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    return x, np.tanh(x @ rng.normal(size=(3, 2))).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("space", ["full", "plane"])
def test_seed_runs_equal_train_sgd_one_at_a_time(split, space, dtype):
    train, test = split
    model = fs.ANN(1, 1, 1)
    runs = fs.train_many(
        model, train, test, starts=SEED_STARTS, epochs=EPOCHS, space=space, dtype=dtype, training_method="vmap"
    )
    tolerance = FLOAT32 if dtype == "float32" else FLOAT64
    for k, start in enumerate(SEED_STARTS):
        path = fs.train_sgd(model, train, test, start=tuple(start), epochs=EPOCHS, dtype=dtype)
        assert_close(runs.w1[k], path.w1, rtol=tolerance)
        assert_close(runs.w2[k], path.w2, rtol=tolerance)
        assert_close(runs.loss[k], path.loss, rtol=tolerance)
    assert runs.step.tolist() == path.step.tolist() and not runs.diverged.any()


@pytest.mark.parametrize("route", ["vmap", "compiled"])
def test_seed_runs_equal_record_path_for_each_optimizer(split, route):
    """One call with a factory per run: every optimiser group is its own exact run."""
    train, test = split
    model, plane = fs.ANN(1, 1, 1), fs.default_plane(fs.ANN(1, 1, 1))
    names = list(OPTIMIZERS)
    factories = [OPTIMIZERS[name] for name in names for _ in SEED_STARTS]
    starts = np.tile(SEED_STARTS, (len(names), 1))
    runs = fs.train_many(model, train, test, starts=starts, optimizer=factories, epochs=EPOCHS, training_method=route)
    assert runs.method == route and len(runs.group_names) == len(names)
    tolerance = FLOAT32 if route == "vmap" else COMPILED
    for k, (factory, start) in enumerate(zip(factories, starts, strict=True)):
        reference = fs.ANN(1, 1, 1)
        with torch.no_grad():
            reference.net.Layer_1.weight.fill_(float(start[0]))
            reference.net.Layer_2.weight.fill_(float(start[1]))
        path = fs.record_path(reference, train, optimizer=factory, epochs=EPOCHS)
        projected = fs.project_path(reference, plane, path)
        assert_close(runs.final_parameters[k], path.vectors[-1], rtol=tolerance, atol=1e-7)
        assert_close(runs.w1[k], projected.w1, rtol=tolerance, atol=1e-7)
        assert_close(runs.w2[k], projected.w2, rtol=tolerance, atol=1e-7)
    assert runs.group_names[names.index("momentum")] == "SGD(lr=0.01, momentum=0.9)"


@pytest.mark.parametrize(("route", "dtype"), [("vmap", "float32"), ("vmap", "float64"), ("compiled", "float32")])
def test_mlp_runs_equal_record_path(mlp_data, route, dtype):
    """Full-space runs of an MLP from vectors off the plane, drawn on a random plane."""
    model = _mlp()
    plane = fs.random_plane(model, seed=1)
    rng = np.random.default_rng(2)
    base = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()
    vectors = base + 0.3 * rng.normal(size=(4, base.size))
    factories = [OPTIMIZERS[name] for name in ("sgd", "momentum", "adam", "adam")]
    runs = fs.train_many(
        model,
        mlp_data,
        mlp_data,
        vectors=vectors,
        plane=plane,
        optimizer=factories,
        epochs=2,
        batch_size=32,
        dtype=dtype,
        training_method=route,
    )
    tolerance = {"float32": FLOAT32 if route == "vmap" else COMPILED, "float64": FLOAT64}[dtype]
    for k, factory in enumerate(factories):
        reference = _mlp().to(getattr(torch, dtype))
        torch.nn.utils.vector_to_parameters(
            torch.as_tensor(vectors[k], dtype=getattr(torch, dtype)), reference.parameters()
        )
        path = fs.record_path(reference, mlp_data, optimizer=factory, epochs=2, batch_size=32, dtype=dtype)
        projected = fs.project_path(model, plane, path)  # the plane through `model`, as train_many draws it
        assert_close(runs.final_parameters[k], path.vectors[-1], rtol=tolerance, atol=tolerance)
        assert_close(runs.positions[k], np.stack([projected.w1, projected.w2], axis=1), rtol=tolerance, atol=tolerance)
        assert_close(runs.residual[k], projected.residual, rtol=tolerance, atol=tolerance)


@cuda
@pytest.mark.parametrize("route", ["vmap", "compiled"])
def test_cuda_runs_match_the_cpu(split, route):
    """Not bit for bit (CUDA promises no summation order): to float32 rounding, grown over the steps."""
    train, test = split
    factories = [OPTIMIZERS[name] for name in ("sgd", "momentum", "adam", "adam", "sgd")]
    kwargs = {"starts": SEED_STARTS, "optimizer": factories, "epochs": EPOCHS, "training_method": route}
    on_cuda = fs.train_many(fs.ANN(1, 1, 1), train, test, device="cuda", **kwargs)
    on_cpu = fs.train_many(fs.ANN(1, 1, 1), train, test, device="cpu", **kwargs)
    assert on_cuda.device.startswith("cuda") and on_cuda.method == route
    assert_close(on_cuda.positions, on_cpu.positions, rtol=COMPILED, atol=1e-6)
    assert_close(on_cuda.loss, on_cpu.loss, rtol=COMPILED)


def test_per_run_seeds_see_train_sgd_batches(split):
    train, test = split
    model, seeds = fs.ANN(1, 1, 1), [3, 0, 3, 11, 5]
    runs = fs.train_many(model, train, test, starts=SEED_STARTS, seed=seeds, epochs=2, training_method="vmap")
    for k, (start, seed) in enumerate(zip(SEED_STARTS, seeds, strict=True)):
        path = fs.train_sgd(model, train, test, start=tuple(start), epochs=2, seed=seed)
        assert_close(runs.positions[k], np.stack([path.w1, path.w2], axis=1), rtol=FLOAT32)


def test_per_run_learning_rates_are_grouped(split):
    train, test = split
    rates = [0.02, 0.005, 0.02, 0.001, 0.005]
    factories = [functools.partial(torch.optim.SGD, lr=rate) for rate in rates]
    runs = fs.train_many(fs.ANN(1, 1, 1), train, test, starts=SEED_STARTS, optimizer=factories, epochs=2)
    assert runs.group_names == ("SGD(lr=0.02)", "SGD(lr=0.005)", "SGD(lr=0.001)")
    assert runs.group.tolist() == [0, 1, 0, 2, 1]
    for k, (start, rate) in enumerate(zip(SEED_STARTS, rates, strict=True)):
        path = fs.train_sgd(fs.ANN(1, 1, 1), train, test, start=tuple(start), epochs=2, lr=rate)
        assert_close(runs.positions[k, -1], [path.w1[-1], path.w2[-1]], rtol=FLOAT32)


@pytest.mark.parametrize("route", ["vmap", "compiled"])
def test_a_diverging_run_leaves_the_others_bit_identical(split, route):
    train, test = split
    model = fs.ANN(1, 1, 1)
    calm = fs.train_many(model, train, test, starts=SEED_STARTS, epochs=2, training_method=route, tile_runs=8)
    wild = np.insert(SEED_STARTS, 2, [[3e18, 3e18]], axis=0)  # its squared errors overflow float32
    runs = fs.train_many(model, train, test, starts=wild, epochs=2, training_method=route, tile_runs=8)
    others = np.delete(np.arange(len(wild)), 2)
    assert runs.diverged.tolist() == [False, False, True, False, False, False]
    assert runs.diverged_step[2] == 1 and np.isnan(runs.positions[2, 1:]).all()
    assert np.array_equal(runs.positions[others], calm.positions)
    assert np.array_equal(runs.loss[others], calm.loss, equal_nan=True)


@pytest.mark.parametrize("route", ["vmap", "compiled"])
def test_a_run_whose_update_overflows_is_recorded_as_nan_and_stopped(split, route):
    """Its parameters stop being finite after a step, recorded before the next step finds it:
    the record is NaN (not a failed projection), the run is flagged, the others untouched."""
    train, test = split
    model = fs.ANN(1, 1, 1)
    calm = fs.train_many(model, train, test, starts=SEED_STARTS, epochs=1, record="step", training_method=route)
    rates = [1e-2] * len(SEED_STARTS)
    rates[2] = 1e38
    factories = [lambda p, lr=lr: torch.optim.SGD(p, lr=lr) for lr in rates]
    runs = fs.train_many(
        model, train, test, starts=SEED_STARTS, optimizer=factories, epochs=1, record="step", training_method=route
    )
    others = np.delete(np.arange(len(SEED_STARTS)), 2)
    assert runs.diverged.tolist() == [k == 2 for k in range(len(SEED_STARTS))]
    assert np.isfinite(runs.positions[2, : runs.diverged_step[2]]).all()  # finite until the update that overflowed
    assert np.isnan(runs.positions[2, runs.diverged_step[2] :]).all()
    assert np.array_equal(runs.positions[others], calm.positions[others])


def test_the_same_run_in_a_larger_tile_is_bit_identical(split):
    train, test = split
    model = fs.ANN(1, 1, 1)
    alone = fs.train_many(model, train, test, starts=SEED_STARTS[:1], epochs=2, training_method="vmap")
    crowd = fs.train_many(model, train, test, starts=np.tile(SEED_STARTS, (40, 1)), epochs=2, training_method="vmap")
    assert np.array_equal(crowd.positions[::5], np.repeat(alone.positions, 40, axis=0))


def test_grid_starts_are_row_major_and_losses_lie_on_the_surface(split):
    train, test = split
    model = fs.ANN(1, 1, 1)
    w1, w2 = fs.axis(-1, 1, 0.5), fs.axis(-0.5, 1, 0.5)
    runs = fs.train_many(model, train, test, grid=(w1, w2), epochs=2)
    assert runs.grid_shape == (4, 3) and runs.count == 12
    assert_close(runs.positions[:, 0], np.stack(np.meshgrid(w1, w2, indexing="ij"), -1).reshape(-1, 2), rtol=1e-7)
    points = runs.positions.reshape(-1, 2)
    expected = fs.evaluate_points(model, fs.default_plane(model), test, points).loss.numpy()
    assert np.array_equal(runs.loss.reshape(-1), expected)


def test_final_evaluation_and_chosen_steps(split):
    train, test = split
    runs = fs.train_many(
        fs.ANN(1, 1, 1), train, test, starts=SEED_STARTS, epochs=2, record=[0, 3, 16], evaluate="final"
    )
    assert runs.step.tolist() == [0, 3, 16] and runs.record == "steps"
    assert np.isnan(runs.loss[:, :-1]).all() and np.isfinite(runs.loss[:, -1]).all()


def test_a_loader_gives_every_run_its_batches(split):
    train, test = split
    tensors = (torch.tensor(train[0])[:, None], torch.tensor(train[1])[:, None])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=50)
    model = fs.ANN(1, 1, 1)
    runs = fs.train_many(model, loader, test, starts=SEED_STARTS[:2], epochs=2)
    path = fs.train_sgd(model, loader, test, start=tuple(SEED_STARTS[1]), epochs=2)
    assert_close(runs.positions[1], np.stack([path.w1, path.w2], axis=1), rtol=FLOAT32)


def test_compare_optimizers_splits_one_call_by_name(split):
    train, test = split
    model = fs.ANN(1, 1, 1)
    grid = (fs.axis(-1, 1, 1.0), fs.axis(-1, 1, 1.0))
    compared = fs.compare_optimizers(
        model, train, test, {"SGD": OPTIMIZERS["sgd"], "Adam": OPTIMIZERS["adam"]}, grid=grid, epochs=2
    )
    assert list(compared) == ["SGD", "Adam"]
    for name, runs in compared.items():
        alone = fs.train_many(model, train, test, grid=grid, epochs=2, optimizer=OPTIMIZERS[name.lower()])
        assert runs.grid_shape == (2, 2) and runs.group_names == alone.group_names
        assert np.array_equal(runs.positions, alone.positions)


def test_the_callers_model_and_global_generators_are_untouched(split):
    train, test = split
    model = nn.Sequential(nn.Linear(1, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    same = np.repeat(np.random.default_rng(0).normal(size=(1, 13)), 3, axis=0)  # three runs from one start
    first = fs.train_many(model, train, test, vectors=same, plane=fs.random_plane(model), epochs=1)
    again = fs.train_many(model, train, test, vectors=same, plane=fs.random_plane(model), epochs=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert np.array_equal(first.positions, again.positions)  # dropout masks come from `seed`
    assert not np.array_equal(first.positions[0], first.positions[1])  # and differ between runs


def test_trajectories_save_and_load(split, tmp_path):
    train, test = split
    runs = fs.train_many(fs.ANN(1, 1, 1), train, test, grid=(fs.axis(-1, 1, 1.0), fs.axis(0, 1, 0.5)), epochs=1)
    stored = fs.load(fs.save(tmp_path / "runs.npz", trajectories=runs, provenance={"seed": 1})).trajectories
    assert stored is not None
    for name in ("positions", "loss", "step", "diverged_step", "residual", "final_parameters", "group", "grid_w1"):
        assert np.array_equal(getattr(stored, name), getattr(runs, name), equal_nan=True), name
    assert stored.group_names == runs.group_names and stored.labels == runs.labels and stored.space == runs.space


class _Coupled(torch.optim.SGD):
    """An SGD whose class fastsurface does not know: refused, whatever its update."""


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        (lambda p: torch.optim.LBFGS(p), "LBFGS, which couples entries"),
        (lambda p: _Coupled(p, lr=0.1), "_Coupled"),
        (lambda p: torch.optim.SGD([{"params": list(p)}, {"params": [nn.Parameter(torch.zeros(1))]}], lr=0.1), "group"),
        ([lambda p: torch.optim.SGD(p, lr=0.1)], "one factory per run"),
        ("sgd", "factory"),
    ],
)
def test_optimizers_that_are_not_elementwise_are_refused(split, optimizer, message):
    train, test = split
    with pytest.raises(fs.FastsurfaceError, match=f"`optimizer`.*{message}"):
        fs.train_many(fs.ANN(1, 1, 1), train, test, starts=SEED_STARTS, optimizer=optimizer, epochs=1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({}, "starts"),
        ({"starts": SEED_STARTS, "grid": (fs.axis(0, 1, 0.5), fs.axis(0, 1, 0.5))}, "starts"),
        ({"starts": np.zeros((3, 3))}, "starts"),
        ({"starts": np.array([[0.0, np.nan]])}, "starts"),
        ({"grid": (fs.axis(0, 1, 0.5),)}, "grid"),
        ({"vectors": np.zeros((2, 2)), "space": "plane"}, "vectors"),
        ({"vectors": np.zeros((2, 3))}, "vectors"),
        ({"starts": SEED_STARTS, "seed": [1, 2]}, "seed"),
        ({"starts": SEED_STARTS, "space": "both"}, "space"),
        ({"starts": SEED_STARTS, "evaluate": "some"}, "evaluate"),
        ({"starts": SEED_STARTS, "training_method": "jit"}, "training_method"),
        ({"starts": SEED_STARTS, "tile_runs": 0}, "tile_runs"),
        ({"starts": SEED_STARTS, "epochs": 0}, "epochs"),
        ({"starts": SEED_STARTS, "record": "batch"}, "record"),
        ({"starts": SEED_STARTS, "reduction": "max"}, "reduction"),
    ],
)
def test_bad_arguments_are_refused(split, kwargs, name):
    train, test = split
    with pytest.raises(fs.FastsurfaceError, match=f"`{name}`"):
        fs.train_many(fs.ANN(1, 1, 1), train, test, **kwargs)


def test_per_run_seeds_need_a_pair(split):
    train, test = split
    loader = [(torch.tensor(train[0][:64, None]), torch.tensor(train[1][:64, None]))]
    with pytest.raises(fs.FastsurfaceError, match=r"`seed`.*pair"):
        fs.train_many(fs.ANN(1, 1, 1), loader, test, starts=SEED_STARTS[:2], seed=[1, 2])
