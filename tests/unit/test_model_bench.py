"""``fastsurface bench --model``: its cases, its FLOP count, its per-point loop against float64,
and the consistency of its table's numbers (no timing thresholds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import fastsurface as fs
from fastsurface import model_bench
from fastsurface._support.choices import BENCH_MODELS, METHODS
from fastsurface.errors import FastsurfaceError
from fastsurface.model_bench import PerPointLoop, forward_cost, model_case, run_model_bench
from tests.helpers import assert_close

CPU = [torch.device("cpu")]
# Round numbers for the ceilings, so that the fractions are checked without measuring them.
CEILINGS = {"sgemm_flops_per_second": 1e11, "tanh_per_second": 4e8, "relu_per_second": 2e9}


def test_every_case_is_built_the_same_way_without_touching_the_global_generator():
    for name in BENCH_MODELS:
        state = torch.get_rng_state()
        first, second = model_case(name, 8), model_case(name, 8)
        assert torch.equal(state, torch.get_rng_state())
        assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
        for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
            assert torch.equal(a, b)
        assert first.loss in ("mse", "cross_entropy") and first.activation in ("tanh", "relu")


def test_the_digits_cnn_is_sized_for_8x8_digits():
    case = model_case("cnn-digits", 32)
    assert sum(p.numel() for p in case.model.parameters()) == 2_758
    assert case.x.shape == (32, 1, 8, 8) and case.x.min() >= 0 and case.x.max() <= 1
    assert case.y.dtype == torch.int64 and set(case.y.tolist()) <= set(range(10))
    assert case.model(case.x).shape == (32, 10)


@pytest.mark.parametrize(
    ("name", "flops", "activations"),
    [
        ("mlp-2-8-1-tanh", 2 * (2 * 8 + 8 * 1), 8),
        ("mlp-8-32-32-1-relu", 2 * (8 * 32 + 32 * 32 + 32 * 1), 64),
        # conv 1->8 3x3 to 8x6x6, conv 8->16 3x3 to 16x4x4, pool to 64, linear 64->20, 20->10
        ("cnn-digits", 2 * (8 * 6 * 6 * 9 + 16 * 4 * 4 * 8 * 9 + 64 * 20 + 20 * 10), 8 * 6 * 6 + 16 * 4 * 4 + 20),
    ],
)
def test_forward_cost_counts_two_flops_per_multiply_accumulate(name, flops, activations):
    case = model_case(name, 1)
    cost = forward_cost(case.model, case.x)
    assert (cost.flops, cost.activations) == (flops, activations)


def test_forward_cost_of_a_grouped_convolution():
    # 8 output channels of 3x3 values, each from 4 / 2 input channels of a 3x3 kernel.
    cost = forward_cost(nn.Conv2d(4, 8, 3, groups=2), torch.zeros(1, 4, 5, 5))
    assert cost.flops == 2 * 8 * 3 * 3 * 2 * 9 and cost.values == 4 * 5 * 5 + 8 * 3 * 3


def _float64_losses(case: model_bench.ModelCase, plane: fs.Plane, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The mean loss at each point, in float64, through ``functional_call`` with the plane's
    parameters: independent of ``vector_to_parameters`` and of the engine."""
    model = case.model.double()
    plane64 = plane.to(torch.device("cpu"), torch.float64)
    x = case.x.double()
    criterion = {"mse": lambda p, y: ((p - y.double()) ** 2).mean(), "cross_entropy": nn.functional.cross_entropy}
    losses = np.empty((len(w1), len(w2)))
    for i, a in enumerate(w1):
        for j, b in enumerate(w2):
            parameters = dict(model.named_parameters()) | plane64.params(torch.tensor(a), torch.tensor(b))
            losses[i, j] = criterion[case.loss](functional_call(model, parameters, (x,)), case.y).item()
    return losses


@pytest.mark.parametrize("name", ["mlp-2-8-1-tanh", "cnn-digits"])
def test_the_per_point_loop_and_the_engine_equal_a_float64_reference(name):
    case = model_case(name, 64)
    plane = fs.random_plane(case.model, seed=0)
    axis = np.linspace(-1, 1, 3)
    expected = _float64_losses(model_case(name, 64), plane, axis, axis)
    loop = PerPointLoop(case.model, plane, case.x, case.y, case.loss)
    # float32 forward passes over 64 samples: relative error of a few float32 ulps
    assert_close(loop.losses(axis, axis), expected, rtol=1e-5)
    surface = fs.loss_surface(case.model, (case.x, case.y), axis, axis, plane=plane, loss=case.loss)
    assert_close(surface.loss, expected, rtol=1e-5)


def test_loss_landscapes_points_are_where_the_package_evaluates():
    package = pytest.importorskip("loss_landscapes")
    pytest.importorskip("loss_landscapes.metrics")
    case = model_case("mlp-2-8-1-tanh", 32)
    plane = fs.random_plane(case.model, seed=0)
    loop = PerPointLoop(case.model, plane, case.x, case.y, case.loss)
    work = model_bench.package_work(package, loop, 4)
    actual, again = work(), work()
    assert np.array_equal(actual, again)  # the corners are not moved by a call
    points = model_bench.loss_landscapes_points(4)
    expected = fs.evaluate_points(case.model, plane, (case.x, case.y), points.reshape(-1, 2)).loss.numpy()
    # the package steps in place along float32 directions: a few ulps per step
    assert_close(actual, expected.reshape(4, 4), rtol=1e-5)


@pytest.fixture
def fixed_ceilings(monkeypatch):
    monkeypatch.setattr(model_bench, "measure_ceilings", lambda *args, **kwargs: dict(CEILINGS))


def test_the_table_numbers_are_consistent(fixed_ceilings):
    result = run_model_bench(["mlp-2-8-1-tanh", "cnn-digits"], CPU, grid=3, samples=16, repeats=2, max_seconds=30)
    json.dumps(result)  # the --json file
    assert [row["case"] for row in result["rows"]] == ["mlp-2-8-1-tanh", "cnn-digits"]
    for row in result["rows"]:
        case = model_case(row["case"], 16)
        cost = forward_cost(case.model, case.x[:1])
        work = row["points"] * row["samples"]
        assert (row["points"], row["samples"], row["loop_rows"], row["device"]) == (9, 16, 3, "cpu")
        assert row["method"] in METHODS and row["activation"] == case.activation
        assert row["parameters"] == sum(p.numel() for p in case.model.parameters())
        assert math.isclose(row["gflop"], cost.flops * work / 1e9)
        assert math.isclose(row["gflop_per_second"], row["gflop"] / row["seconds"])
        assert math.isclose(row["sgemm_fraction"], row["gflop_per_second"] * 1e9 / CEILINGS["sgemm_flops_per_second"])
        activation_ceiling = CEILINGS[f"{case.activation}_per_second"]
        assert math.isclose(row["activation_fraction"], cost.activations * work / row["seconds"] / activation_ceiling)
        assert math.isclose(row["loop_speedup"], row["loop_seconds"] / row["seconds"])
        if row["package_seconds"] is not None:
            assert math.isclose(row["package_speedup"], row["package_seconds"] / row["seconds"])
        assert 0 <= row["error"] < 1e-5 and "differ" not in row["note"]
    table = model_bench.format_model_table(result)
    assert "mlp-2-8-1-tanh" in table and "cnn-digits" in table and "GFLOP/s" in table
    assert f"loss-landscapes {result['machine']['loss_landscapes'] or '(not installed)'}" in table
    assert "sgemm 100 GFLOP/s" in table and "2 per multiply-accumulate" in table and "torch threads" in table


def test_a_missing_loss_landscapes_is_said_in_the_table(fixed_ceilings, monkeypatch):
    monkeypatch.setattr(model_bench, "loss_landscapes_package", lambda: None)
    result = run_model_bench(["mlp-2-8-1-tanh"], CPU, grid=2, samples=8, repeats=1)
    (row,) = result["rows"]
    assert row["package_seconds"] is None and row["package_speedup"] is None
    assert row["note"] == "loss-landscapes not installed" and result["machine"]["loss_landscapes"] is None
    table = model_bench.format_model_table(result)
    assert "loss-landscapes not installed" in table and "loss-landscapes (not installed)" in table


def test_beyond_max_seconds_the_loop_is_extrapolated_and_the_package_skipped(fixed_ceilings):
    result = run_model_bench(["mlp-2-8-1-tanh"], CPU, grid=5, samples=8, repeats=1, max_seconds=1e-9)
    (row,) = result["rows"]
    assert row["loop_rows"] == 1 and row["package_seconds"] is None
    assert "loop extrapolated from 1 rows" in row["note"]
    if model_bench.loss_landscapes_package() is not None:
        assert "loss-landscapes skipped: est." in row["note"]
    assert row["error"] < 1e-5  # the row that ran is still checked


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"models": ["mlp-2-8-1-tanh", "resnet"]}, "`model`"),
        ({"grid": 0}, "`grid`"),
        ({"grid": 10**6}, "`grid`"),
        ({"samples": 0}, "`samples`"),
        ({"samples": 10**14}, "`samples`"),
        ({"repeats": 0}, "`repeats`"),
        ({"max_seconds": math.inf}, "`max_seconds`"),
        ({"max_seconds": 0.0}, "`max_seconds`"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_timed(monkeypatch, arguments, name):
    monkeypatch.setattr(model_bench, "measure_ceilings", lambda *a, **k: pytest.fail("timed"))
    with pytest.raises(FastsurfaceError, match=name) as error:
        run_model_bench(**({"models": list(BENCH_MODELS), "devices": CPU} | arguments))
    if name == "`model`":
        assert all(case in str(error.value) for case in BENCH_MODELS)


def test_a_loop_that_disagrees_with_the_engine_is_flagged(fixed_ceilings, monkeypatch):
    losses = PerPointLoop.losses
    monkeypatch.setattr(PerPointLoop, "losses", lambda self, w1, w2: losses(self, w1, w2) * 1.01)
    (row,) = run_model_bench(["mlp-2-8-1-tanh"], CPU, grid=2, samples=8, repeats=1)["rows"]
    assert math.isclose(row["error"], 0.01, rel_tol=1e-3) and "losses differ by 1.0e-02" in row["note"]
