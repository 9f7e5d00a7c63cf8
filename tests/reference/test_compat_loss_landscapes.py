"""The drop-in against the real loss-landscapes 3.0.6 (a test dependency): same numbers."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
import fastsurface.compat.loss_landscapes as drop_in
from tests.helpers import SMALL_MODELS as MODELS

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


def _same_call(function, seed, models, package_metric, drop_in_metric, **kwargs):
    """``function`` of both libraries on the same models (the package's on copies) and seed."""
    torch.manual_seed(seed)
    expected = getattr(package, function)(*copy.deepcopy(models), package_metric, **kwargs)
    torch.manual_seed(seed)
    actual = getattr(drop_in, function)(*models, drop_in_metric, **kwargs)
    return actual, expected


def _metric_pair(make):
    """The same metric class built on each library's ``Metric``."""
    return make(package.metrics.Metric), make(drop_in.metrics.Metric)


def test_float64_models_evaluated_point_by_point():
    """A custom metric runs the per-point loop; a float64 model's start point must not alias
    its parameters, or every point after the first would drift."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))

    def make(base):
        class Cross(base):
            def __call__(self, wrapper):
                return nn.functional.cross_entropy(wrapper.forward(x), y).item()

        return Cross()

    actual, expected = _same_call("random_line", 3, [model], *_metric_pair(make), steps=6)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_a_loss_subclass_that_overrides_call_is_called_as_written():
    (model, _, _), x, y = _case("mlp", 4)

    def make(base):
        class Doubled(base):
            def __call__(self, wrapper):
                return 2 * super().__call__(wrapper)

        return Doubled(nn.CrossEntropyLoss(), x, y)

    actual, expected = _same_call("random_line", 1, [model], make(package.metrics.Loss), make(drop_in.metrics.Loss))
    np.testing.assert_allclose(actual, expected, rtol=RTOL)


def test_pipelines_of_array_metrics_and_random_layers_keep_the_package_order():
    """Per point, every metric of a pipeline, in order: dropout draws as in the package, and
    array values stack as ``np.array`` stacks the package's tuples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2)).train()
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))

    def make(library):
        class Logits(library.metrics.Metric):
            def __call__(self, wrapper):
                return wrapper.forward(x)[:3, 0].detach().numpy()

        loss = library.metrics.Loss(nn.CrossEntropyLoss(), x, y)
        return library.metrics.MetricPipeline([loss, loss]), library.metrics.MetricPipeline([Logits(), Logits()])

    (losses, arrays), (drop_in_losses, drop_in_arrays) = make(package), make(drop_in)
    actual, expected = _same_call("random_line", 2, [model], losses, drop_in_losses, steps=4)
    assert actual.shape == expected.shape == (4, 2)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)
    actual, expected = _same_call("random_line", 2, [model], arrays, drop_in_arrays, steps=4)
    assert actual.shape == expected.shape == (4, 2, 3)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-6)


def test_wrappers_with_structured_inputs_and_shared_modules():
    """A ``forward_fn`` taking a dict of inputs; a module listed twice in a wrapper moves by
    both of its entries' steps, as in the package."""
    (model, _, _), x, y = _case("mlp", 5)

    def forward(m, inputs):
        return m(inputs["x"])

    def wrappers(library, modules):
        copied = copy.deepcopy(model) if library is package else model
        return library.GeneralModelWrapper(copied, modules(copied), forward)

    for modules in (lambda m: [m], lambda m: [m, m[-1]]):
        torch.manual_seed(3)
        expected = package.random_line(
            wrappers(package, modules), package.metrics.Loss(nn.CrossEntropyLoss(), {"x": x}, y), steps=5
        )
        after_package = torch.rand(2)
        torch.manual_seed(3)
        actual = drop_in.random_line(
            wrappers(drop_in, modules), drop_in.metrics.Loss(nn.CrossEntropyLoss(), {"x": x}, y), steps=5
        )
        np.testing.assert_allclose(actual, expected, rtol=RTOL)
        assert torch.equal(torch.rand(2), after_package)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_norm_hook_models_straight_out_of_training():
    """Old-style weight_norm / spectral_norm keep a computed weight that deepcopy refuses;
    in training mode spectral_norm updates a buffer each forward pass, which no probe may
    advance before the package's loop."""
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for hook, mode in ((nn.utils.weight_norm, False), (nn.utils.spectral_norm, False), (nn.utils.spectral_norm, True)):
        torch.manual_seed(0)
        model = nn.Sequential(hook(nn.Linear(4, 8)), nn.Tanh(), nn.Linear(8, 3)).train(mode)
        nn.functional.cross_entropy(model(x), y).backward()
        torch.manual_seed(1)
        actual = drop_in.random_plane(model, drop_in.metrics.Loss(nn.CrossEntropyLoss(), x, y), steps=4)
        torch.manual_seed(
            1
        )  # the package runs on the model itself: deepcopy refuses it, as the drop-in's copy must not
        expected = package.random_plane(model, package.metrics.Loss(nn.CrossEntropyLoss(), x, y), steps=4)
        np.testing.assert_allclose(actual, expected, rtol=RTOL)


def test_value_types_follow_the_package():
    (model, _, _), x, y = _case("mlp", 6)

    def correct(logits, target):
        return (logits.argmax(dim=1) == target).sum()

    actual, expected = _both("random_line", 0, model, loss_fn=correct, inputs=x, target=y, steps=4)
    assert actual.dtype == expected.dtype == np.int64
    np.testing.assert_array_equal(actual, expected)

    def as_vector(logits, target):
        return nn.functional.cross_entropy(logits, target).reshape(1)

    actual, expected = _both("random_line", 0, model, loss_fn=as_vector, inputs=x, target=y, steps=4)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)

    metric = drop_in.metrics.Loss(nn.CrossEntropyLoss(reduction="none"), x, y)
    with pytest.raises(RuntimeError, match="cannot be converted to Scalar"):
        drop_in.random_line(model, metric, steps=4)  # as the package's ``.item()`` refuses it


def test_point_runs_on_a_copy_without_gradients():
    (model, _, _), x, _ = _case("mlp", 7)

    def make(base):
        class Logits(base):
            def __call__(self, wrapper):
                return wrapper.forward(x).numpy()  # refused on a tensor that requires grad

        return Logits()

    expected, actual = (
        library.point(copy.deepcopy(model), make(library.metrics.Metric)) for library in (package, drop_in)
    )
    np.testing.assert_array_equal(actual, expected)
    assert all(p.requires_grad for p in model.parameters())


def test_loss_perturbations_give_the_package_numbers():
    (model, _, _), x, y = _case("mlp", 8)
    expected, actual = (
        library.metrics.LossPerturbations(nn.CrossEntropyLoss(), x, y, n_directions=3, alpha=0.1)
        for library in (package, drop_in)
    )
    actual, expected = _same_call("random_line", 4, [model], expected, actual, steps=3)
    assert actual.shape == expected.shape == (3, 3)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-6)


def test_argument_forms_the_package_accepts():
    (start, end, other), x, y = _case("mlp", 9)
    for distance in (np.float32(0.5), torch.tensor(0.5), float("inf")):
        actual, expected = _both("random_line", 0, start, inputs=x, target=y, distance=distance, steps=torch.tensor(3))
        np.testing.assert_allclose(actual, expected, rtol=RTOL)
    for function, models in (("linear_interpolation", (start, end)), ("planar_interpolation", (start, end, other))):
        actual, expected = _both(function, 0, *models, inputs=x, target=y, steps=0)
        assert actual.shape == expected.shape == (0,)
