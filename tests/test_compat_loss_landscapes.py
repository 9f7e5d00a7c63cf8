"""The drop-in against the real loss-landscapes 3.0.6 (a test dependency): same numbers."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
import fastsurface.compat.loss_landscapes as drop_in
from tests.conftest import SMALL_MODELS as MODELS

package = pytest.importorskip("loss_landscapes")
pytest.importorskip("loss_landscapes.metrics")

# The package walks the grid by in-place float32 additions; fastsurface computes each
# point directly, so the two differ by float32 rounding of the parameters.
RTOL = 2e-5


def _case(name, seed, samples=32):
    make, shape = MODELS[name]
    torch.manual_seed(seed)
    models = [make() for _ in range(3)]
    for model in models:  # the package divides by zero on an all-zero bias (LayerNorm's initial one)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
    return models, torch.randn(samples, *shape), torch.randint(0, 2, (samples,))


def _both(function, seed, *models, loss_fn=None, inputs=None, target=None, **kwargs):
    """The package's result (on copies: it moves the model) and the drop-in's, same global seed."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    torch.manual_seed(seed)
    expected = getattr(package, function)(
        *copy.deepcopy(models), package.metrics.Loss(loss_fn, inputs, target), **kwargs
    )
    torch.manual_seed(seed)
    actual = getattr(drop_in, function)(*models, drop_in.metrics.Loss(loss_fn, inputs, target), **kwargs)
    return actual, expected


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("normalization", ["filter", "layer", "model", None])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_plane_and_line_give_the_package_numbers(model_name, normalization, seed):
    (model, _, _), x, y = _case(model_name, seed)
    actual, expected = _both(
        "random_plane", seed, model, inputs=x, target=y, distance=2, steps=7, normalization=normalization
    )
    assert actual.shape == expected.shape == (7, 7)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)
    actual, expected = _both(
        "random_line", seed, model, inputs=x, target=y, distance=0.5, steps=9, normalization=normalization
    )
    assert actual.shape == expected.shape == (9,)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_interpolations_and_point_give_the_package_numbers(model_name):
    (start, one, two), x, y = _case(model_name, 5)
    actual, expected = _both("planar_interpolation", 0, start, one, two, inputs=x, target=y, steps=6)
    assert actual.shape == (6, 6)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)
    actual, expected = _both("linear_interpolation", 0, start, one, inputs=x, target=y, steps=8)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)
    metric = drop_in.metrics.Loss(nn.CrossEntropyLoss(), x, y)
    assert drop_in.point(start, metric) == package.point(
        copy.deepcopy(start), package.metrics.Loss(nn.CrossEntropyLoss(), x, y)
    )


def test_regression_loss_on_the_seed_model():
    x, y = (torch.as_tensor(t, dtype=torch.float32)[:, None] for t in fs.piecewise_dataset(300))
    model = fs.ANN(1, 3, 1)
    actual, expected = _both("random_plane", 4, model, loss_fn=nn.MSELoss(), inputs=x, target=y, distance=1, steps=10)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)


def test_the_callers_model_is_never_modified():
    (model, _, _), x, y = _case("mlp", 2)
    before = copy.deepcopy(model.state_dict())
    drop_in.random_plane(model, drop_in.metrics.Loss(nn.CrossEntropyLoss(), x, y), steps=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_pipelines_wrappers_and_custom_metrics():
    (model, _, _), x, y = _case("mlp", 3)

    class Margin(drop_in.metrics.Metric):
        def __call__(self, wrapper):
            return float(wrapper.forward(x).diff(dim=1).mean())

    class PackageMargin(package.metrics.Metric):
        def __call__(self, wrapper):
            return float(wrapper.forward(x).diff(dim=1).mean())

    pipeline = drop_in.metrics.MetricPipeline([drop_in.metrics.Loss(nn.CrossEntropyLoss(), x, y), Margin()])
    expected_pipeline = package.metrics.MetricPipeline(
        [package.metrics.Loss(nn.CrossEntropyLoss(), x, y), PackageMargin()]
    )
    torch.manual_seed(1)
    actual = drop_in.random_plane(model, pipeline, steps=3)
    torch.manual_seed(1)
    expected = package.random_plane(copy.deepcopy(model), expected_pipeline, steps=3)
    assert actual.shape == expected.shape == (3, 3, 2)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-6)

    scale = 2.0
    wrapper = drop_in.GeneralModelWrapper(model, [model], lambda m, inputs: m(inputs) * scale)
    copied = copy.deepcopy(model)
    expected_wrapper = package.GeneralModelWrapper(copied, [copied], lambda m, inputs: m(inputs) * scale)
    torch.manual_seed(2)
    actual = drop_in.random_line(wrapper, drop_in.metrics.Loss(nn.CrossEntropyLoss(), x, y), steps=5)
    torch.manual_seed(2)
    expected = package.random_line(expected_wrapper, package.metrics.Loss(nn.CrossEntropyLoss(), x, y), steps=5)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)


def test_train_mode_models_fall_back_to_the_package_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 2)).train()
    with torch.no_grad():
        model[1].bias.add_(0.1)
    running = model[1].running_mean.clone()
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    actual, expected = _both("random_plane", 6, model, inputs=x, target=y, steps=4)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)
    assert torch.equal(model[1].running_mean, running)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"normalization": "unit"}, "`normalization`"), ({"steps": 0}, "`steps`"), ({"distance": 0}, "`distance`")],
)
def test_bad_arguments_raise_before_any_work(kwargs, argument):
    (model, _, _), x, y = _case("mlp", 0)
    state = torch.random.get_rng_state()
    with pytest.raises(fs.FastsurfaceError, match=argument):
        drop_in.random_plane(model, drop_in.metrics.Loss(nn.CrossEntropyLoss(), x, y), **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
