"""Private copies of models straight out of training (tensors made by autograd in attributes)."""

import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface._support.copying import copy_inputs_if_written, private_copy


class _Recording(nn.Module):
    """Keeps every output in a list, as activation-recording code does."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.outputs = []

    def forward(self, x):
        out = self.layer(x)
        self.outputs.append(out)
        return out


def _trained(model, x):
    model(x).sum().backward()
    return model


@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented:UserWarning")
def test_models_holding_graph_tensors_are_copied_and_evaluated():
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the original weight_norm is deprecated, still used
        normed = nn.Sequential(nn.utils.weight_norm(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 1))
    for model in (_trained(normed, x), _trained(_Recording(), x)):
        copied = private_copy(model)
        assert all(
            torch.equal(a, b) for a, b in zip(copied.state_dict().values(), model.state_dict().values(), strict=True)
        )
        plane = fs.random_plane(model, normalization=None)
        surface = fs.loss_surface(model, (x, y), [0.0, 1.0], [0.0, 1.0], plane=plane, method="vmap")
        assert np.isfinite(surface.loss).all()


def test_a_model_that_cannot_be_copied_is_a_clear_error():
    deep = _Recording()
    deep.outputs.append({"deep": [[deep.layer(torch.randn(2, 3))]]})  # deeper than the search goes
    locked = _Recording()
    locked.outputs.append(threading.Lock())
    for model in (deep, locked):
        with pytest.raises(fs.FastsurfaceError, match="`model` cannot be copied"):
            private_copy(model)


class _WritesThroughData(nn.Module):
    """Writes into its input through ``.data``, which the version counter does not see."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def forward(self, x):
        x.data.mul_(2)
        return self.layer(x)


def test_only_a_model_that_writes_into_its_inputs_gets_them_copied():
    x = torch.randn(4, 3)
    kept = x.clone()
    for model, written in [
        (nn.Sequential(nn.ReLU(inplace=True), nn.Linear(3, 1)), True),
        (_WritesThroughData(), True),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 1)), False),  # writes its own tensor
    ]:
        assert copy_inputs_if_written(model, x) is written
        assert bool(model._forward_pre_hooks) is written
        model(x)
        assert torch.equal(x, kept)


def test_the_hessian_and_critical_points_of_a_model_that_writes_into_its_inputs_are_its_twins(rng):
    def model(inplace):
        torch.manual_seed(0)
        return nn.Sequential(nn.LeakyReLU(0.1, inplace=inplace), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))

    x, y = torch.tensor(rng.normal(size=(40, 3))), torch.tensor(rng.normal(size=(40, 1)))
    kept = x.clone()
    written, twin = fs.hessian_plane(model(True), (x, y)), fs.hessian_plane(model(False), (x, y))
    np.testing.assert_allclose(written.eigenvalues, twin.eigenvalues, rtol=1e-12)
    plane = fs.random_plane(model(False), seed=1)
    grid = {"plane": plane, "dtype": "float64"}
    surface = fs.loss_surface(model(False), (x, y), np.linspace(-2, 2, 9), np.linspace(-2, 2, 9), **grid)
    points = [(c.w1, c.w2) for c in fs.critical_points(surface, model(True), (x, y), **grid)]
    assert points and points == [(c.w1, c.w2) for c in fs.critical_points(surface, model(False), (x, y), **grid)]
    assert torch.equal(x, kept)
