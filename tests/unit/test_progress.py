"""Progress bars: a total known before the first unit of work, equal to the work done for
pair data; a long run announced once from its first unit; nothing at all unless asked."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
import torch
import tqdm.auto

import fastsurface as fs
from fastsurface._support import progress
from tests.helpers import small_cnn, small_mlp


class RecordingBar:
    """Stands in for ``tqdm``: keeps the total seen at each update, the count and the lines written."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, **kwargs: object) -> None:
        self.total: int | None = None
        self.n = 0
        self.totals_at_updates: list[int | None] = []
        self.lines: list[str] = []
        self.closed = False
        RecordingBar.made.append(self)

    def update(self, units: int = 1) -> None:
        self.totals_at_updates.append(self.total)
        self.n += units

    def refresh(self) -> None:
        pass

    def write(self, line: str) -> None:
        self.lines.append(line)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    RecordingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    return RecordingBar.made


def _data(samples: int, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(samples, *shape)).astype(np.float32), rng.normal(size=(samples, 2)).astype(np.float32)


GRID = (np.linspace(-1, 1, 7), np.linspace(-1, 1, 5))


@pytest.mark.parametrize(
    "options",
    [
        {"tile_points": 4},  # vmap, 9 tiles of one chunk
        {"tile_points": 6, "memory_budget": 2**16},  # several chunks, the last one shorter
        {"tile_points": 5, "reduction": "batch_mean", "batch_size": 7, "memory_budget": 2**16},
        {"tile_points": 8, "train_mode": True, "batch_size": 9},  # one chunk per batch
    ],
)
def test_the_surface_bar_total_is_the_tile_count_before_the_first_tile(bars, options):
    model, data = small_mlp(), _data(50, (3,))
    fs.loss_surface(model, data, *GRID, plane=fs.random_plane(model), progress=True, device="cpu", **options)
    (bar,) = bars
    assert bar.closed and bar.n == bar.total and set(bar.totals_at_updates) == {bar.total}
    if "memory_budget" not in options:  # else the chunk size comes from the budget
        chunks = math.ceil(50 / options["batch_size"]) if options.get("train_mode") else 1
        assert bar.total == chunks * math.ceil(35 / options["tile_points"])


def test_the_bar_counts_closed_form_tiles_and_listed_points(bars):
    data = fs.piecewise_dataset(300)
    surface = fs.loss_surface(fs.ANN(1, 1, 1), data, *GRID, tile_points=6, progress=True)
    points = np.stack([GRID[0], GRID[0]], axis=1)
    fs.evaluate_points(fs.ANN(1, 1, 1), fs.default_plane(fs.ANN(1, 1, 1)), data, points, tile_points=2, progress=True)
    assert surface.method == "closed_form"
    assert all(bar.n == bar.total and set(bar.totals_at_updates) == {bar.total} for bar in bars)
    assert bars[0].total == math.ceil(7 / 6)  # the closed form tiles the 7 values of the free coordinate


def test_a_loader_of_batches_gets_an_estimated_total(bars):
    model, (x, y) = small_cnn(), _data(30, (1, 6, 6))
    batches = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 30, 10)]
    fs.loss_surface(model, batches, *GRID, plane=fs.random_plane(model), tile_points=12, progress=True)
    (bar,) = bars
    assert bar.total == bar.n == 3 * math.ceil(35 / 12)


def test_paths_and_hessians_report_steps_and_products(bars):
    model, data = small_mlp(), _data(50, (3,))
    path = fs.record_path(model, data, epochs=3, batch_size=16, progress=True)
    found = fs.hessian_plane(model, data, iterations=6, progress=True)
    training, hessian = bars
    assert training.total == training.n == 3 * math.ceil(50 / 16) == int(path.step[-1])
    assert hessian.total == 12 and hessian.n == found.iterations <= hessian.total


def test_progress_is_off_by_default_in_library_calls(monkeypatch, capsys):
    def refused(**kwargs: object) -> None:
        raise AssertionError("a bar was made")

    monkeypatch.setattr(tqdm.auto, "tqdm", refused)
    model, data = small_mlp(), _data(20, (3,))
    fs.loss_surface(model, data, *GRID, plane=fs.random_plane(model))
    fs.record_path(model, data, epochs=1)
    fs.hessian_plane(model, data, iterations=3)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(("long_seconds", "lines"), [(-1.0, 1), (math.inf, 0)])
def test_a_long_run_says_so_once_from_its_first_tile(bars, monkeypatch, long_seconds, lines):
    monkeypatch.setattr(progress, "LONG_SECONDS", long_seconds)
    model, data = small_mlp(), _data(20, (3,))
    fs.loss_surface(model, data, *GRID, plane=fs.random_plane(model), tile_points=3, progress=True)
    (bar,) = bars
    assert len(bar.lines) == lines
    if lines:
        assert bar.lines[0].startswith("surface: about ") and "for 12 tiles (estimated from the first)" in bar.lines[0]


def test_the_long_run_line_in_words():
    assert progress.long_run_line("surface", 1200, "tile", 252.0) == (
        "surface: about 4.2 min for 1,200 tiles (estimated from the first)"
    )
    assert progress.long_run_line("hessian", 40, "Hv", 45.0, exact=False) == (
        "hessian: about 45 s for about 40 Hvs (estimated from the first)"
    )
    assert progress.long_run_line("surface", 9, "tile", 7200.0).startswith("surface: about 2.0 h")


def test_an_estimated_total_that_the_run_passes_is_dropped(bars):
    bar = progress.Progress("surface", "tile", True)
    bar.plan(2, exact=False)
    for _ in range(3):
        bar.update()
    bar.close()
    assert bars[0].total is None and bars[0].n == 3


def test_step_and_tile_totals_of_unsized_data_are_unknown():
    batches = iter([(torch.zeros(2, 1), torch.zeros(2, 1))])
    assert progress.tile_total(batches, False, 2, 5) == (None, False)
    assert progress.step_total(batches, False, 2, 3) is None
