"""``record_path`` gives back its trained model and takes an optimiser instance (issue 17,
item 4), and the smaller surprises of item 9: unreachable recorded steps, zero interpolation
directions, critical points of a piecewise-constant loss, zero losses on a log colour scale,
PCA over several paths."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.views.planar import loss_colouring
from tests.helpers import small_mlp


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    return x, np.sin(x[:, :2]).astype(np.float32)


def _model():
    torch.manual_seed(0)
    return small_mlp()


def _grouped_adam(parameters):
    first, *rest = list(parameters)
    return torch.optim.Adam([{"params": [first], "lr": 1e-2}, {"params": rest}], lr=3e-3, betas=(0.8, 0.95))


def test_record_path_gives_back_its_trained_copy(data):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    path = fs.record_path(model, data, optimizer=_grouped_adam, epochs=2)
    trained = torch.cat([p.detach().reshape(-1) for p in path.model.parameters()]).double().numpy()
    np.testing.assert_array_equal(trained, path.vectors[-1])
    assert path.model is not model and path.model.training == model.training
    assert all(p.grad is None for p in path.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's is untouched


def test_an_optimiser_instance_gives_the_path_of_its_factory(data):
    model = _model()
    instance = _grouped_adam(model.parameters())
    by_instance = fs.record_path(model, data, optimizer=instance, epochs=2, record="step")
    by_factory = fs.record_path(model, data, optimizer=_grouped_adam, epochs=2, record="step")
    np.testing.assert_array_equal(by_instance.vectors, by_factory.vectors)
    assert not instance.state  # never stepped


def test_an_optimiser_instance_brings_its_state(data):
    model = _model()
    instance = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    model(torch.from_numpy(data[0])).square().mean().backward()
    with torch.no_grad():  # one step on a throwaway copy fills the momentum buffers without moving `model`
        saved = copy.deepcopy(model.state_dict())
        instance.step()
        model.load_state_dict(saved)
    state, kept = copy.deepcopy(instance.state_dict()), copy.deepcopy(instance.state_dict())

    def resumed(parameters):
        optimiser = torch.optim.SGD(parameters, lr=1e-2, momentum=0.9)
        optimiser.load_state_dict(state)
        return optimiser

    by_instance = fs.record_path(model, data, optimizer=instance, epochs=1, record="step")
    by_factory = fs.record_path(model, data, optimizer=resumed, epochs=1, record="step")
    fresh = fs.record_path(model, data, optimizer=lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9), epochs=1)
    np.testing.assert_array_equal(by_instance.vectors, by_factory.vectors)
    assert not np.array_equal(by_instance.vectors[-1], fresh.vectors[-1])
    # The instance is never stepped, nor its state changed: a second call gives the same path.
    assert all(torch.equal(a, b) for a, b in zip(_buffers(instance.state_dict()), _buffers(kept), strict=True))
    again = fs.record_path(model, data, optimizer=instance, epochs=1, record="step")
    np.testing.assert_array_equal(again.vectors, by_instance.vectors)


def _buffers(state):
    return [buffer for entry in state["state"].values() for buffer in entry.values()]


def test_an_optimiser_of_other_tensors_is_refused_saying_what_to_pass(data):
    model = _model()
    with pytest.raises(fs.FastsurfaceError, match=r"no parameters of `model`.*factory"):
        fs.record_path(model, data, optimizer=torch.optim.SGD(small_mlp().parameters(), lr=1e-2))
    with pytest.raises(fs.FastsurfaceError, match=r"a factory .* or an optimiser of `model`'s parameters"):
        fs.record_path(model, data, optimizer="adam")


def test_unreachable_recorded_steps_are_refused_with_the_valid_range(data):
    model = _model()  # 100 samples in batches of 64: 2 steps an epoch
    with pytest.raises(fs.FastsurfaceError, match=r"does not reach: \[5, 10000\]; it takes steps 0 to 4"):
        fs.record_path(model, data, epochs=2, record=[0, 5, 10000])
    batches = [(data[0][:50], data[1][:50]), (data[0][50:], data[1][50:])]  # an iterable: known after training
    with pytest.raises(fs.FastsurfaceError, match=r"\[7\]; it takes steps 0 to 2"):
        fs.record_path(model, batches, epochs=1, record=[0, 7])
    assert fs.record_path(model, data, epochs=2, record=[0, 4]).step.tolist() == [0, 4]


def test_an_interpolation_towards_the_origin_model_is_refused():
    model, other = _model(), small_mlp()
    with pytest.raises(fs.FastsurfaceError, match="`first` has the same parameters as the origin"):
        fs.interpolation_plane(model, copy.deepcopy(model), other)
    with pytest.raises(fs.FastsurfaceError, match="`second` has the same parameters"):
        fs.interpolation_plane(model, other, model)
    with pytest.raises(fs.FastsurfaceError, match="`end` has the same parameters"):
        fs.interpolation_line(model, model)


def test_critical_points_of_a_piecewise_constant_loss_are_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    data = (x, rng.integers(0, 3, 300))
    plane = fs.random_plane(model, seed=0)
    grid = np.linspace(-3, 3, 31)
    surface = fs.loss_surface(model, data, grid, grid, plane=plane, loss=fs.accuracy)
    with pytest.raises(fs.FastsurfaceError, match=r"piecewise constant.*watershed"):
        fs.critical_points(surface, model, data)
    smooth = fs.loss_surface(model, data, grid, grid, plane=plane, loss="cross_entropy")
    assert fs.critical_points(smooth, model, data)  # the same plane's cross-entropy has its points


def test_log_colour_draws_zero_losses_at_the_smallest_positive_and_says_so():
    loss = np.array([[0.0, 0.5], [2.0, np.nan]])
    colour, bar = loss_colouring(loss, True)
    np.testing.assert_array_equal(colour[0], np.log10([0.5, 0.5]))
    assert "zeros drawn at 0.5" in bar["title"]["text"]
    assert "zeros" not in loss_colouring(np.array([0.5, 2.0]), True)[1]["title"]["text"]
    for bad in (np.array([-1.0, 2.0]), np.zeros(3)):
        with pytest.raises(fs.FastsurfaceError, match="`log_color` needs losses >= 0 with at least one positive"):
            loss_colouring(bad, True)


def test_pca_over_several_paths_is_pca_of_their_points_together(data):
    paths = [fs.record_path(_model(), data, epochs=3, seed=seed, record="step") for seed in (0, 1)]
    together = fs.pca_plane(paths)
    joined = fs.ParameterPath(
        paths[0].names, paths[0].shapes, np.concatenate([p.vectors for p in paths]), np.arange(14)
    )
    by_hand = fs.pca_plane(joined)
    np.testing.assert_array_equal(together.explained_variance_ratio, by_hand.explained_variance_ratio)
    assert together.plane.same_as(by_hand.plane)
    with pytest.raises(fs.FastsurfaceError, match="entry 1 differs from entry 0"):
        fs.pca_plane([paths[0], fs.record_path(nn.Linear(3, 2), data)])
    with pytest.raises(fs.FastsurfaceError, match=r"got str \(entry 1\)"):
        fs.pca_plane([paths[0], "path"])
