import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastsurface as fs
from tests.helpers import assert_close


def _classifier():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def test_cross_entropy_matches_a_per_point_loop(rng):
    model = _classifier()
    x = rng.normal(size=(90, 4))
    y = rng.integers(0, 3, size=90)
    plane = fs.entry_plane(model, "0.weight[1, 2]", "2.weight[0, 5]")
    w1, w2 = np.linspace(-1, 1, 3), np.linspace(-2, 2, 4)
    surface = fs.loss_surface(model, (x, y), w1, w2, plane=plane, loss="cross_entropy", dtype="float64")
    expected = np.zeros((3, 4))
    for i, a in enumerate(w1):
        for j, b in enumerate(w2):
            probe = _with_entries(model, a, b)
            expected[i, j] = F.cross_entropy(probe(torch.tensor(x)), torch.tensor(y)).item()
    assert_close(surface.loss, expected, rtol=1e-12)
    assert surface.loss_name == "cross_entropy"


def test_cross_entropy_over_positions_is_each_sample_s_mean(rng):
    """Logits ``(S, C, L)`` against targets ``(S, L)``: a sample's loss is the mean over its
    positions, so ``"mean"`` equals torch's mean over all positions."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1))
    x = torch.as_tensor(rng.normal(size=(30, 2, 5)))
    y = torch.as_tensor(rng.integers(0, 3, size=(30, 5)))
    plane = fs.entry_plane(model, "0.weight[0, 1, 2]", "0.bias[2]")
    w = np.linspace(-1, 1, 3)
    surface = fs.loss_surface(model, (x, y), w, w, plane=plane, loss="cross_entropy", dtype="float64")
    expected = np.zeros((3, 3))
    for i, a in enumerate(w):
        for j, b in enumerate(w):
            probe = copy.deepcopy(model).double()
            with torch.no_grad():
                probe[0].weight[0, 1, 2], probe[0].bias[2] = a, b
            expected[i, j] = F.cross_entropy(probe(x), y).item()
    assert_close(surface.loss, expected, rtol=1e-12)


def _with_entries(model, a, b):
    probe = _classifier().double()
    probe.load_state_dict(model.state_dict())
    with torch.no_grad():
        probe[0].weight[1, 2] = a
        probe[2].weight[0, 5] = b
    return probe


def test_a_callable_loss_is_reduced_per_sample(rng):
    x, y = rng.normal(size=40), rng.normal(size=40)

    def absolute_error(prediction, target):
        return (prediction - target).abs().reshape(len(target), -1).mean(dim=1)

    surface = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), [0.5], [1.5], loss=absolute_error, dtype="float64")
    assert_close(surface.loss[0, 0], np.abs(1.5 * np.tanh(0.5 * x) - y).mean(), rtol=1e-12)
    assert surface.loss_name == "absolute_error"


def test_a_callable_that_does_not_return_per_sample_losses_is_refused(rng):
    x, y = rng.normal(size=10), rng.normal(size=10)
    with pytest.raises(fs.FastsurfaceError, match="`loss` must return one loss per sample"):
        fs.loss_surface(fs.ANN(1, 1, 1), (x, y), [0.5], [1.5], loss=lambda p, t: ((p - t) ** 2).mean())


def test_cross_entropy_refuses_real_valued_targets(rng):
    with pytest.raises(fs.FastsurfaceError, match="cross-entropy needs"):
        fs.loss_surface(
            _classifier(),
            (rng.normal(size=(10, 4)), rng.normal(size=10)),
            [0.0],
            [0.0],
            plane=fs.entry_plane(_classifier(), "0.weight[0, 0]", "2.bias[0]"),
            loss="cross_entropy",
        )


def test_unknown_losses_are_refused():
    with pytest.raises(fs.FastsurfaceError, match="`loss`"):
        fs.loss_surface(fs.ANN(1, 1, 1), (np.zeros(3), np.zeros(3)), [0.0], [0.0], loss="hinge")
