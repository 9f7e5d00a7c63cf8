"""Tile sizes chosen by timing candidate tiles, and results that do not depend on the choice."""

import numpy as np
import torch
from torch import nn

import fastsurface as fs
from fastsurface.engine._tiles import CANDIDATE_TILES, MIN_TILE_POINTS, GridPoints, TileChoice
from tests.helpers import assert_close


def _timed(choice: TileChoice, seconds_per_point: dict[int, float], points: int) -> list[int]:
    """Run ``points`` points through ``choice`` with made-up timings; the tile sizes used."""
    sizes, start = [], 0
    while start < points:
        size = min(points - start, choice.next())
        choice.took(size, size * seconds_per_point.get(size, 1.0))
        sizes.append(size)
        start += size
    return sizes


def test_the_size_with_the_least_time_per_point_is_chosen_and_remembered():
    key = object()
    rates = {8: 3.5, 16: 3.0, 32: 1.0, 64: 2.0, 128: 2.5, 200: 4.0}
    sizes = _timed(TileChoice(200, key), rates, 4000)
    timed = 3 * (len(CANDIDATE_TILES) + 1)
    assert sizes[:timed] == [*CANDIDATE_TILES, 200] * 3
    assert set(sizes[timed:-1]) == {32}
    again = TileChoice(200, key)
    assert again.tile == 32 and again.next() == 32 and _timed(again, rates, 64) == [32, 32]


def test_a_size_is_judged_by_its_fastest_call_not_its_first():
    """A size's first call also pays for its fresh allocations: slower per point than a
    smaller size there, faster on its later calls, the larger size must win."""
    choice, calls = TileChoice(200, object()), set()
    while choice.timing:
        size = choice.next()
        first = size not in calls
        calls.add(size)
        per_point = 1.0 if size != 200 else (5.0 if first else 0.5)
        choice.took(size, size * per_point)
    assert choice.tile == 200


def test_without_a_key_or_with_a_small_budget_the_budget_decides():
    assert _timed(TileChoice(50), {}, 120) == [50, 50, 20]
    most = CANDIDATE_TILES[0] - 2  # below every candidate
    small = TileChoice(most, object())
    assert _timed(small, {most: 1.0}, 100)[:3] == [most] * 3
    assert small.tile == most


def test_surfaces_with_timed_tiles_equal_fixed_tiles_in_float64(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    plane = fs.random_plane(model, seed=0)
    data = rng.normal(size=(300, 4)), rng.normal(size=(300, 1))
    w = np.linspace(-1, 1, 21)
    timed = fs.loss_surface(model, data, w, w, plane=plane, dtype="float64", device="cpu")
    fixed = fs.loss_surface(model, data, w, w, plane=plane, dtype="float64", device="cpu", tile_points=7)
    assert_close(timed.loss, fixed.loss, rtol=1e-12)
    naive = fs.naive_loss_surface(model, data, w[::5], w[::4], plane=plane, reduction="mean")
    assert_close(timed.loss[::5, ::4], naive, rtol=1e-12)


def test_chunks_of_the_batched_shared_route_are_capped_and_others_are_not():
    """The batched route plans chunks for small tiles, at most ``BATCHED_CHUNK_SAMPLES``
    long; a model outside that route (a convolution after the cut) keeps the budget's plan."""
    from fastsurface.engine._tiles import BATCHED_CHUNK_SAMPLES, TileSizer
    from fastsurface.engine.evaluate import _chunk_plan
    from fastsurface.engine.options import EvalOptions

    torch.manual_seed(0)
    options = EvalOptions.from_keywords({})
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    plan = _chunk_plan(mlp, fs.random_plane(mlp), options)
    assert plan == (CANDIDATE_TILES[0], BATCHED_CHUNK_SAMPLES)
    sizer = TileSizer(mlp, fs.random_plane(mlp).to(torch.device("cpu"), torch.float32), 2**30, *plan)
    assert sizer.chunk_samples(torch.randn(100, 4)) == BATCHED_CHUNK_SAMPLES
    assert sizer.tile_points(BATCHED_CHUNK_SAMPLES) > CANDIDATE_TILES[0]
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3), nn.Flatten())
    assert _chunk_plan(cnn, fs.random_plane(cnn), options) == (MIN_TILE_POINTS, None)
    assert _chunk_plan(mlp, fs.random_plane(mlp), EvalOptions.from_keywords({"tile_points": 5}))[1] is None


def test_the_cap_on_chunks_is_dropped_where_auto_takes_the_closed_form(rng):
    """5,000 samples: a ReLU MLP's brute force streams them in capped chunks, the seed's
    closed form (whose work is per value of its free coordinate) in one."""
    from fastsurface.engine._tiles import BATCHED_CHUNK_SAMPLES
    from fastsurface.engine.evaluate import Prepared
    from fastsurface.engine.options import EvalOptions

    x, y = rng.normal(size=(5000, 1)), rng.normal(size=(5000, 1))
    options = EvalOptions.from_keywords({})
    mlp = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    capped = [chunk.samples for chunk in Prepared(mlp, (x, y), fs.random_plane(mlp), options).chunks()]
    assert max(capped) == BATCHED_CHUNK_SAMPLES and sum(capped) == 5000
    seed = Prepared(fs.ANN(1, 1, 1), (x, y), None, options)
    assert [chunk.samples for chunk in seed.chunks()] == [5000]
    assert (
        seed.evaluate(GridPoints(np.zeros(2), np.ones(3), torch.device("cpu"), torch.float32)).method == "closed_form"
    )
