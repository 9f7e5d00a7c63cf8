"""What the tests share besides fixtures: the one tolerance helper, the device list, a float64
numpy reference of the seed loss, small models of each kind, the repository's root folder and
the command-line options of a small run.

Imported one way everywhere: ``from tests.helpers import ...``; fixtures live in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPOSITORY = Path(__file__).resolve().parents[1]

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]

# `fastsurface run` options for a small seed problem: a 16 x 16 grid, 2,000 samples, 3 epochs.
SMALL_RUN = ["--step", "0.25", "--samples", "2000", "--epochs", "3", "--no-progress"]


def assert_close(actual: object, expected: object, rtol: float, atol: float = 0.0) -> None:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``, NaNs equal."""
    actual = np.asarray(actual.cpu() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    expected = np.asarray(expected.cpu() if isinstance(expected, torch.Tensor) else expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def numpy_seed_loss(w1: np.ndarray, w2: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float64 mean squared error of ``w2 * tanh(w1 * x)``, shape ``(len(w1), len(w2))``."""
    prediction = w2[None, :, None] * np.tanh(w1[:, None, None] * x[None, None, :])
    return ((prediction - y) ** 2).mean(axis=-1)


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def small_layer_norm() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 2))


# Small models of each kind the general engine must handle: name -> (factory, input shape of a sample).
SMALL_MODELS = {"mlp": (small_mlp, (3,)), "cnn": (small_cnn, (1, 6, 6)), "layer_norm": (small_layer_norm, (3,))}


def assert_cli_refused(argv: list[str], message: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``fastsurface argv`` exits with status 2 and one error line containing ``message``,
    no traceback, and writes nothing into ``folder`` (the working directory)."""
    from fastsurface.cli import main

    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("fastsurface: error: ") and error.count("\n") == 1, error
    assert message in error and "Traceback" not in error
    assert list(folder.iterdir()) == []
