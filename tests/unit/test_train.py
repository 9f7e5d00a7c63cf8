import copy

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from tests.helpers import assert_close


@pytest.fixture(scope="module")
def small_split():
    return fs.train_test_split(*fs.piecewise_dataset(1500), test_size=0.2, seed=0)


def test_path_starts_at_minus_one_and_has_epochs_plus_one_points(small_split):
    train, test = small_split
    path = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=7)
    assert (path.w1[0], path.w2[0]) == (-1.0, -1.0)
    assert len(path.w1) == len(path.w2) == len(path.loss) == 8
    assert path.step.tolist() == [0, *[19 * k for k in range(1, 8)]]  # 1200 samples / 64 -> 19 steps an epoch


@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_each_recorded_loss_lies_on_the_surface(small_split, reduction):
    train, test = small_split
    model = fs.ANN(1, 1, 1)
    path = fs.train_sgd(model, train, test, epochs=4, reduction=reduction)
    surface = fs.loss_surface(model, test, np.unique(path.w1), np.unique(path.w2), reduction=reduction)
    for a, b, loss in zip(path.w1, path.w2, path.loss, strict=True):
        i, j = np.searchsorted(surface.w1, a), np.searchsorted(surface.w2, b)
        assert surface.loss[i, j] == loss  # the same engine path: exactly on the surface


def test_matches_plain_module_sgd_on_the_same_batches(small_split):
    train, test = small_split
    path = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=3, seed=11, lr=0.02)
    model = fs.ANN(1, 1, 1)
    with torch.no_grad():
        model.net.Layer_1.weight.fill_(-1.0)
        model.net.Layer_2.weight.fill_(-1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    x, y = torch.tensor(train[0], dtype=torch.float32)[:, None], torch.tensor(train[1], dtype=torch.float32)[:, None]
    generator = torch.Generator().manual_seed(11)
    for epoch in range(3):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            index = order[start : start + 64]
            optimizer.zero_grad()
            nn.MSELoss()(model(x[index]), y[index]).backward()
            optimizer.step()
        w1, w2 = model.net.Layer_1.weight.item(), model.net.Layer_2.weight.item()
        assert_close([path.w1[epoch + 1], path.w2[epoch + 1]], [w1, w2], rtol=1e-5)


def test_training_is_reproducible_and_seeded(small_split):
    train, test = small_split
    first = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=2, seed=3)
    second = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=2, seed=3)
    other = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=2, seed=4)
    assert np.array_equal(first.w1, second.w1) and np.array_equal(first.loss, second.loss)
    assert not np.array_equal(first.w1, other.w1)


def test_record_step_has_one_point_per_step(small_split):
    train, test = small_split
    path = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=2, record="step")
    assert len(path.loss) == 2 * 19 + 1 and path.step.tolist() == list(range(39))


def test_the_callers_model_is_not_trained(small_split):
    train, test = small_split
    model = fs.ANN(1, 1, 1)
    before = copy.deepcopy(model.state_dict())
    fs.train_sgd(model, train, test, epochs=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_loader_trains_too(small_split):
    train, test = small_split
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(train[0])[:, None], torch.tensor(train[1])[:, None]), batch_size=64
    )
    path = fs.train_sgd(fs.ANN(1, 1, 1), loader, test, epochs=2)
    assert len(path.loss) == 3 and path.w1[-1] != -1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": 1e39}, "lr"),  # beyond float32: the step would be infinite
        ({"epochs": 0}, "epochs"),
        ({"start": (1.0,)}, "start"),
        ({"record": "batch"}, "record"),
        ({"batch_size": -1}, "batch_size"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_training_arguments_are_refused(small_split, kwargs, name):
    train, test = small_split
    with pytest.raises(fs.FastsurfaceError, match=f"`{name}`"):
        fs.train_sgd(fs.ANN(1, 1, 1), train, test, **kwargs)


def test_progress_shows_a_bar_over_epochs_only_when_asked(small_split, capsys):
    train, test = small_split
    quiet = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=2)
    assert capsys.readouterr().err == ""
    shown = fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=2, progress=True)
    assert "training" in capsys.readouterr().err and np.array_equal(shown.w1, quiet.w1)
