"""Eval mode by default; train mode on request; a clear error for modules vmap cannot run."""

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from tests.helpers import assert_close


def _batch_norm_model():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1))
    model.train()  # the caller's mode must not matter, nor change
    with torch.no_grad():  # running statistics that differ from any batch's
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(2.0)
    return model


def _loop(model, plane, x, y, w1, w2, batch_size, train):
    """A per-point loop: weights written into a copy, batches of ``batch_size``, batch_mean."""
    probe = _batch_norm_model().double()
    probe.load_state_dict(model.state_dict())
    probe.train(train)
    parameters = dict(probe.named_parameters())
    plane = plane.to(torch.device("cpu"), torch.float64)
    x, y = torch.tensor(x), torch.tensor(y)
    out = np.zeros((len(w1), len(w2)))
    with torch.no_grad():
        for i, a in enumerate(w1):
            for j, b in enumerate(w2):
                for name, value in plane.params(torch.tensor(a), torch.tensor(b)).items():
                    parameters[name].copy_(value)
                losses = [
                    ((probe(x[s : s + batch_size]) - y[s : s + batch_size]) ** 2).mean().item()
                    for s in range(0, len(x), batch_size)
                ]
                out[i, j] = np.mean(losses)
    return out


@pytest.mark.parametrize("train_mode", [False, True])
def test_batch_norm_in_eval_and_train_mode_match_a_per_point_loop(rng, train_mode):
    model = _batch_norm_model()
    x, y = rng.normal(size=(90, 3)), rng.normal(size=(90, 1))
    plane = fs.entry_plane(model, "0.weight[1, 2]", "3.weight[0, 4]")
    w1, w2 = np.linspace(-1, 1, 3), np.linspace(-2, 2, 4)
    kwargs = {"plane": plane, "reduction": "batch_mean", "batch_size": 20, "dtype": "float64"}
    surface = fs.loss_surface(model, (x, y), w1, w2, train_mode=train_mode, **kwargs)
    assert_close(surface.loss, _loop(model, plane, x, y, w1, w2, 20, train_mode), rtol=1e-10)
    assert surface.method == ("vmap" if train_mode else "closed_form")
    assert model.training and model[1].running_mean[0].item() == 0.5  # the caller's model is untouched


def test_dropout_in_train_mode_is_seeded_and_leaves_global_state_alone(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    x, y = rng.normal(size=(64, 2)), rng.normal(size=(64, 1))
    plane = fs.entry_plane(model, "0.weight[0, 0]", "2.bias[0]")
    state = torch.get_rng_state()
    first = fs.loss_surface(model, (x, y), [0.0, 1.0], [0.0, 1.0], plane=plane, train_mode=True)
    second = fs.loss_surface(model, (x, y), [0.0, 1.0], [0.0, 1.0], plane=plane, train_mode=True)
    evaluated = fs.loss_surface(model, (x, y), [0.0, 1.0], [0.0, 1.0], plane=plane)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(first.loss, second.loss)
    assert not np.allclose(first.loss, evaluated.loss)


@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_an_evaluator_in_train_mode_draws_the_same_dropout_masks_on_every_call(rng, reduction):
    """Its first call also runs the data checks' forward passes, which later calls skip:
    the masks must not depend on them (several chunks: the batches of ``batch_mean``)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1))
    data = (rng.normal(size=(50, 3)), rng.normal(size=(50, 1)))
    plane = fs.random_plane(model, seed=0)
    points = [[0.0, 0.0], [0.5, -0.5], [1.0, 1.0]]
    options = {"train_mode": True, "reduction": reduction, "batch_size": 16}
    once = fs.evaluate_points(model, plane, data, points, **options).loss.numpy()
    evaluator = fs.Evaluator(model, data, plane=plane, **options)
    calls = [evaluator.losses(points) for _ in range(3)]
    for losses in calls:
        assert np.array_equal(losses, once)


class _Recorder(nn.Module):
    """Writes a parameter-dependent value into a buffer in place: vmap cannot batch that."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.register_buffer("last", torch.zeros(1))

    def forward(self, x):
        self.last.copy_(self.layer.weight.sum())
        return self.layer(x)


class _RunningAverage(nn.Module):
    """Keeps a running average of its outputs in a buffer: under vmap, torch reports only
    a shape mismatch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 2)
        self.register_buffer("average", torch.zeros(2))

    def forward(self, x):
        out = self.layer(x)
        self.average.mul_(0.9).add_(0.1 * out.mean(0))
        return out


@pytest.mark.parametrize("make", [_Recorder, _RunningAverage])
@pytest.mark.parametrize("method", ["vmap", "auto"])
def test_a_module_vmap_cannot_run_gets_a_clear_error(make, method):
    model = make()
    plane = fs.entry_plane(model, "layer.weight[0, 0]", "layer.bias[0]")
    data = (np.zeros((5, 1)), np.zeros((5, model.layer.out_features)))
    with pytest.raises(fs.FastsurfaceError, match=r"`model` cannot be evaluated under torch\.func\.vmap"):
        fs.loss_surface(model, data, [0.0, 1.0], [0.0], plane=plane, method=method)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"train_mode": "yes"}, "train_mode"), ({"train_mode": True, "method": "closed_form"}, "method")],
)
def test_train_mode_arguments_are_checked(kwargs, name):
    with pytest.raises(fs.FastsurfaceError, match=f"`{name}`"):
        fs.loss_surface(fs.ANN(1, 1, 1), (np.zeros(5), np.zeros(5)), [0.0], [0.0], **kwargs)


def test_a_one_sample_batch_that_batch_norm_cannot_take_is_named_in_the_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    data = (torch.randn(11, 3), torch.randn(11, 2))  # batches of 5, 5 and 1
    with pytest.raises(fs.FastsurfaceError, match=r"`model` fails.*this batch holds one sample.*`batch_size`"):
        fs.loss_surface(model, data, [0.0], [0.0], plane=fs.random_plane(model), train_mode=True, batch_size=5)
