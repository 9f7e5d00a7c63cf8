"""Repository-wide pytest settings."""

from __future__ import annotations

import pytest

# `python -m fastsurface` entry: importing it for doctests would run the CLI.
collect_ignore = ["fastsurface/__main__.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README's quick start trains and evaluates the whole seed problem: seconds, so slow."""
    for item in items:
        if item.path.name == "README.md":
            item.add_marker(pytest.mark.slow)
