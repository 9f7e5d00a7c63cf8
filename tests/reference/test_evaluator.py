"""The prepared evaluator against loss_surface, evaluate_points and the float64 naive loop."""

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.engine import evaluate
from tests.helpers import SMALL_MODELS, assert_close, numpy_seed_loss


def test_seed_windows_and_points_equal_one_shot_calls_and_the_float64_reference(rng, seed_split):
    _, (x, y) = seed_split
    evaluator = fs.Evaluator(fs.ANN(1, 1, 1), (x, y), dtype="float64")
    for _ in range(3):  # windows of different sizes, each as a one-shot call computes it
        w1, w2 = np.sort(rng.uniform(-2, 2, rng.integers(2, 9))), np.sort(rng.uniform(-2, 2, rng.integers(2, 9)))
        surface = evaluator.surface(w1, w2)
        assert np.array_equal(surface.loss, fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, dtype="float64").loss)
        assert_close(surface.loss, numpy_seed_loss(w1, w2, x, y), rtol=1e-12)
        assert surface.method == "closed_form" and surface.samples == len(x)
    points = rng.uniform(-2, 2, size=(25, 2))
    losses = evaluator.losses(points)
    one_shot = fs.evaluate_points(fs.ANN(1, 1, 1), evaluator.plane, (x, y), points, dtype="float64").loss.numpy()
    assert np.array_equal(losses, one_shot)
    assert_close(losses, numpy_seed_loss(points[:, 0], points[:, 1], x, y).diagonal(), rtol=1e-12)
    assert evaluator.losses(points.tolist()).shape == (25,)


def test_the_kept_closed_form_workspace_serves_windows_that_grow_and_shrink(rng):
    # An Evaluator keeps the closed form's kernel and float64 buffers between calls; a
    # window of 2,500 values splits the Gram sums into blocks of samples. Each call must
    # still equal a one-shot call bit for bit, in float32 and with unequal sample weights.
    x, y = rng.normal(0, 2, 1500), rng.normal(size=1500)
    for reduction in ("mean", "batch_mean"):
        options = {"reduction": reduction, "batch_size": 400}
        evaluator = fs.Evaluator(fs.ANN(1, 1, 1), (x, y), **options)
        for size in (3, 2500, 7):
            w1, w2 = np.linspace(-2, 2, size), np.linspace(-1, 1, 5)
            surface = evaluator.surface(w1, w2)
            assert surface.method == "closed_form"
            assert np.array_equal(surface.loss, fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, **options).loss)
        points = rng.uniform(-2, 2, size=(9, 2))
        one_shot = fs.evaluate_points(fs.ANN(1, 1, 1), evaluator.plane, (x, y), points, **options).loss.numpy()
        assert np.array_equal(evaluator.losses(points), one_shot)
    reference = numpy_seed_loss(points[:, 0], points[:, 1], x, y).diagonal()
    assert_close(fs.Evaluator(fs.ANN(1, 1, 1), (x, y)).losses(points), reference, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_small_models_of_each_kind_match_the_naive_loop_in_float64(rng, name, reduction):
    factory, shape = SMALL_MODELS[name]
    torch.manual_seed(0)
    model = factory().double()
    plane = fs.random_plane(model, seed=0)
    data = rng.normal(size=(45, *shape)), rng.normal(size=(45, 2))
    evaluator = fs.Evaluator(model, data, plane=plane, dtype="float64", reduction=reduction, batch_size=16)
    w1, w2 = np.linspace(-1, 1, 4), np.linspace(-0.5, 1, 3)
    naive = fs.naive_loss_surface(model, data, w1, w2, plane=plane, reduction=reduction, batch_size=16)
    for _ in range(2):
        assert_close(evaluator.surface(w1, w2).loss, naive, rtol=1e-12)
    grid_points = np.stack(np.meshgrid(w1, w2, indexing="ij"), axis=-1).reshape(-1, 2)
    assert_close(evaluator.losses(grid_points), naive.reshape(-1), rtol=1e-12)


def _batches(x: np.ndarray, y: np.ndarray, size: int):
    return ((x[i : i + size], y[i : i + size, None]) for i in range(0, len(x), size))


def test_a_one_shot_iterator_is_kept_on_the_device_and_read_once(seed_split):
    _, (x, y) = seed_split
    w = np.linspace(-1, 1, 5)
    evaluator = fs.Evaluator(fs.ANN(1, 1, 1), _batches(x, y, 64), reduction="batch_mean")
    first, second = evaluator.surface(w, w), evaluator.surface(w, w)
    assert np.array_equal(first.loss, second.loss) and second.batches == 32
    expected = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w, w, reduction="batch_mean", batch_size=64)
    assert_close(first.loss, expected.loss, rtol=1e-6)


def test_data_too_large_to_keep_is_read_again_or_refused_when_it_cannot_be(seed_split, monkeypatch):
    _, (x, y) = seed_split
    monkeypatch.setattr(evaluate, "kept_data_limit", lambda _options: 1000)
    w = np.linspace(-1, 1, 3)
    reusable = fs.Evaluator(fs.ANN(1, 1, 1), list(_batches(x, y, 500)))
    assert np.array_equal(reusable.surface(w, w).loss, reusable.surface(w, w).loss)
    one_shot = fs.Evaluator(fs.ANN(1, 1, 1), _batches(x, y, 500))
    with pytest.raises(fs.FastsurfaceError, match="`data` is a one-shot iterator"):
        one_shot.surface(w, w)


def test_bad_arguments_are_refused_before_any_evaluation(seed_split):
    _, test = seed_split
    with pytest.raises(fs.FastsurfaceError, match=r"`options`.*unknown"):
        fs.Evaluator(fs.ANN(1, 1, 1), test, lossy="mse")
    with pytest.raises(fs.FastsurfaceError, match="`model`"):
        fs.Evaluator(nn.Linear, test)  # type: ignore[arg-type]
    evaluator = fs.Evaluator(fs.ANN(1, 1, 1), test)
    with pytest.raises(fs.FastsurfaceError, match="`points`"):
        evaluator.losses(np.zeros((3, 3)))
    with pytest.raises(fs.FastsurfaceError, match="`w1`"):
        evaluator.surface([1.0, 0.0], [0.0])
