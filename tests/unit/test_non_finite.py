"""Losses that overflow stay NaN/inf: in the result, in saved files, in the CLI summary,
and figures still render."""

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.cli import main

X, Y = fs.piecewise_dataset(200)


@pytest.fixture(scope="module")
def overflowing():
    """float32 squared errors above 3.4e38 for w2 = 3e19: one column of inf. (The closed form
    combines its float32 forward passes in float64, where these losses are finite.)"""
    data = (np.abs(X) + 0.5, Y)
    return fs.loss_surface(fs.ANN(1, 1, 1), data, [1.0, 2.0], [1.0, 3e19], dtype="float32", method="vmap")


def log_prediction(prediction, target):
    """A per-sample loss that is NaN where the prediction is negative."""
    return torch.log(prediction).squeeze(-1)


def test_overflow_stays_inf_and_the_rest_stays_finite(overflowing):
    assert np.isposinf(overflowing.loss[:, 1]).all() and np.isfinite(overflowing.loss[:, 0]).all()
    assert overflowing.argmin()[1] == 1.0  # the lowest finite loss


def test_nan_losses_stay_nan():
    surface = fs.loss_surface(fs.ANN(1, 1, 1), (np.abs(X) + 0.5, Y), [1.0, 2.0], [-1.0, 1.0], loss=log_prediction)
    assert np.isnan(surface.loss[:, 0]).all() and np.isfinite(surface.loss[:, 1]).all()


def test_figures_and_files_keep_non_finite_values(tmp_path, overflowing):
    figure = fs.plot_surface(overflowing)
    assert np.isposinf(np.asarray(figure.data[0].z)).sum() == 2
    assert "<html>" in figure.to_html(include_plotlyjs=False)
    loaded = fs.load(fs.save(tmp_path / "s.npz", surface=overflowing)).surface
    assert loaded.loss.tobytes() == overflowing.loss.tobytes()


def test_the_cli_summary_reports_non_finite_losses(capsys):
    grid = ["--w1", "0", "4e19", "--w2", "0", "4e19", "--step", "1e19"]
    assert main(["surface", *grid, "--samples", "500", "--method", "vmap", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "warning   9 of 16 losses are not finite (0 NaN, 9 inf" in out
    assert "lowest    loss" in out
