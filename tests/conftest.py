"""Shared fixtures: a seeded generator, the seed data, and the one tolerance helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]


def assert_close(actual: object, expected: object, rtol: float, atol: float = 0.0) -> None:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``, NaNs equal."""
    actual = np.asarray(actual.cpu() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    expected = np.asarray(expected.cpu() if isinstance(expected, torch.Tensor) else expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's name: different per test, same every run."""
    return np.random.default_rng(sum(request.node.name.encode()))


@pytest.fixture(scope="session")
def seed_split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The seed data split 80/20: ``(train, test)`` with 8,000 and 2,000 samples."""
    return fs.train_test_split(*fs.piecewise_dataset(), test_size=0.2, seed=0)


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
