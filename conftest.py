"""Repository-wide pytest settings: what is collected, and tool caches kept out of the repository."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# `python -m fastsurface` entry: importing it for doctests would run the CLI.
collect_ignore = ["fastsurface/__main__.py"]

# Hypothesis and pytest-benchmark write into the working directory by default; a test run
# should leave the checkout as it found it.
TOOL_CACHES = Path(tempfile.gettempdir()) / "fastsurface-test-caches"
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(TOOL_CACHES / "hypothesis"))


def pytest_configure(config: pytest.Config) -> None:
    """pytest-benchmark creates its storage folder at start-up, even when it saves nothing:
    point it outside the repository unless the command line names one."""
    named = any(argument.startswith("--benchmark-storage") for argument in config.invocation_params.args)
    if config.pluginmanager.hasplugin("benchmark") and not named:
        config.option.benchmark_storage = f"file://{TOOL_CACHES / 'benchmarks'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README's quick start trains and evaluates the whole seed problem: seconds, so slow."""
    for item in items:
        if item.path.name == "README.md":
            item.add_marker(pytest.mark.slow)
