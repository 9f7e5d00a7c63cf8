"""``fastsurface bench --basins``: its grid, the consistency of its row's numbers, its skip rule,
and the flags each mode refuses (no timing thresholds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface import basin_bench
from fastsurface.basin_bench import format_basin_table, run_basin_bench
from fastsurface.errors import FastsurfaceError
from tests.helpers import assert_cli_refused

TANH_PER_SECOND = 4e8  # a round ceiling, so the fraction is checked without measuring it
BASELINE = {"plain_seconds_per_step": 6e-4, "train_sgd_seconds_per_step": 7e-5}


@pytest.fixture
def fixed_ceiling(monkeypatch):
    monkeypatch.setattr(basin_bench, "activation_rate", lambda *args, **kwargs: TANH_PER_SECOND)


@pytest.fixture
def fixed_baselines(monkeypatch):
    monkeypatch.setattr(basin_bench, "baseline_seconds_per_step", lambda *args, **kwargs: dict(BASELINE))


@pytest.mark.parametrize("count", [2, 3, 7, 100, 200, 333])
def test_the_grid_has_the_count_asked_for_over_minus_two_to_two(count):
    grid = basin_bench.seed_grid(count)
    assert len(grid) == count and grid[0] == -2 and grid[-1] < 2
    np.testing.assert_allclose(np.diff(grid), 4 / count, rtol=1e-12)


def test_the_default_grid_is_the_seed_maps():
    np.testing.assert_array_equal(basin_bench.seed_grid(200), fs.axis(-2, 2, 0.02))


def test_the_row_numbers_are_consistent_and_the_map_is_train_many_s(fixed_ceiling):
    result = run_basin_bench(["cpu"], grid=6, epochs=1, max_seconds=60)
    json.dumps(result)  # the --json file
    (row,) = result["rows"]
    runs, steps = 36, 125  # 8,000 training samples in batches of 64
    assert (row["device"], row["runs"], row["steps_per_run"], row["method"]) == ("cpu", runs, steps, "vmap")
    assert math.isclose(row["ns_per_run_step"], row["seconds"] / (runs * steps) * 1e9)
    for name in ("plain", "train_sgd"):
        per_step = result["baseline"][f"{name}_seconds_per_step"]
        assert per_step > 0 and row[f"{name}_seconds_per_step"] == per_step
        assert math.isclose(row[f"{name}_seconds"], per_step * runs * steps)
        assert math.isclose(row[f"{name}_speedup"], row[f"{name}_seconds"] / row["seconds"])
    assert math.isclose(row["tanh_fraction"], runs * steps * 64 / row["seconds"] / TANH_PER_SECOND)
    assert row["warm_up_seconds"] > 0 and row["estimate_seconds"] > 0 and row["note"] == ""
    assert row["peak_memory_bytes"] is None or row["peak_memory_bytes"] > 0
    train, test = basin_bench.seed_split()
    grid = basin_bench.seed_grid(6)
    expected = fs.basin_map(fs.train_many(fs.ANN(1, 1, 1), train, test, grid=(grid, grid), epochs=1, batch_size=64))
    assert (row["attractors"], row["diverged"]) == (len(expected.sizes), int(expected.diverged.sum()))
    assert (result["baseline"]["device"], result["baseline"]["starts"], result["baseline"]["epochs"]) == ("cpu", 3, 1)
    assert result["machine"]["ceilings"] == {"cpu": {"tanh_per_second": TANH_PER_SECOND}}
    assert (result["grid"], result["epochs"], result["batch_size"], result["lr"]) == (6, 1, 64, 1e-2)
    table = format_basin_table(result)
    assert "extrapolated from 3 starts x 1 epochs" in table and "baselines timed on the CPU" in table
    assert f"{row['plain_speedup']:,.0f}x" in table and "6 x 6 starts over [-2, 2)^2, 1 epochs" in table
    assert "cpu: 4e+08/s" in table and f"{torch.get_num_threads()} threads" in table


def test_a_map_estimated_beyond_max_seconds_is_skipped_and_said(fixed_ceiling, fixed_baselines):
    result = run_basin_bench([torch.device("cpu")], grid=4, epochs=3, max_seconds=1e-9)
    (row,) = result["rows"]
    timed = ("seconds", "ns_per_run_step", "plain_speedup", "train_sgd_speedup", "tanh_fraction")
    assert all(row[name] is None for name in (*timed, "peak_memory_bytes", "attractors", "diverged"))
    assert row["note"] == f"map skipped: est. {row['estimate_seconds']:.0f} s" and row["estimate_seconds"] > 0
    assert math.isclose(row["plain_seconds"], BASELINE["plain_seconds_per_step"] * 16 * 375)
    assert "map skipped: est." in format_basin_table(result)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"devices": "cpu"}, "`devices`"),
        ({"devices": []}, "`devices`"),
        ({"devices": ["tpu"]}, "`device`"),
        ({"grid": 0}, "`grid`"),
        ({"grid": 1}, "`grid`"),
        ({"grid": True}, "`grid`"),
        ({"grid": 2.5}, "`grid`"),
        ({"grid": 10**6}, "`grid`"),
        ({"epochs": 0}, "`epochs`"),
        ({"repeats": 0}, "`repeats`"),
        ({"max_seconds": math.inf}, "`max_seconds`"),
        ({"max_seconds": math.nan}, "`max_seconds`"),
        ({"max_seconds": 0.0}, "`max_seconds`"),
        ({"max_seconds": "60"}, "`max_seconds`"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(monkeypatch, arguments, name):
    monkeypatch.setattr(basin_bench, "seed_split", lambda: pytest.fail("ran"))
    with pytest.raises(FastsurfaceError, match=name):
        run_basin_bench(**({"devices": ["cpu"], "grid": 4, "epochs": 1} | arguments))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--basins", "--model"], "`--basins` and `--model` are separate modes"),
        (["--basins", "--model", "mlp-2-8-1-tanh"], "`--basins` and `--model` are separate modes"),
        (["--basins", "--steps", "0.5"], "`--steps` applies only without `--model` or `--basins`"),
        (["--basins", "--methods", "vmap"], "`--methods` applies only without `--model` or `--basins`"),
        (["--basins", "--naive-rows", "1"], "`--naive-rows` applies only without `--model` or `--basins`"),
        (["--basins", "--samples", "10"], "`--samples` applies only with `--model`"),
        (["--epochs", "3"], "`--epochs` applies only with `--basins`"),
        (["--model", "--epochs", "3"], "`--epochs` applies only with `--basins`"),
        (["--grid", "5"], "`--grid` applies only with `--model` or with `--basins`"),
        (["--basins", "--grid", "0"], "`--grid` must be a positive integer"),
        (["--basins", "--grid", "1"], "`--grid` must be at least 2"),
        (["--basins", "--grid", str(10**6)], "`--grid`"),
        (["--basins", "--epochs", "0"], "`--epochs` must be a positive integer"),
        (["--basins", "--epochs", "two"], "--epochs"),
        (["--basins", "--max-seconds", "0"], "`--max-seconds`"),
    ],
)
def test_the_cli_refuses_flags_of_another_mode_on_one_line(tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(basin_bench, "seed_split", lambda: pytest.fail("ran"))
    argv = ["bench", "--device", "cpu", *arguments, "--json", str(tmp_path / "bench.json")]
    assert_cli_refused(argv, message, tmp_path, capsys)
