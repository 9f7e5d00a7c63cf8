"""Shared fixtures: a seeded generator and the seed data. Helpers are in ``tests/helpers.py``."""

from __future__ import annotations

import numpy as np
import pytest

import fastsurface as fs


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's name: different per test, same every run."""
    return np.random.default_rng(sum(request.node.name.encode()))


@pytest.fixture(scope="session")
def seed_split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The seed data split 80/20: ``(train, test)`` with 8,000 and 2,000 samples."""
    return fs.train_test_split(*fs.piecewise_dataset(), test_size=0.2, seed=0)
