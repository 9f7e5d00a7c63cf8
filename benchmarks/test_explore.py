"""The explorer's interaction latency, measured in headless Chromium by the page itself.

Each interaction is timed from its input event to the plot's redraw (the page's
``performance.mark`` at the event, ``performance.measure`` once ``Plotly.react`` has drawn
and two animation frames have passed): a new 200 x 200 window typed in, a zoom (a plotly
relayout, recomputed at about 200 x 200), and a new 25-epoch SGD path of the seed problem
(10,000 samples, a new learning rate each time). Every round asks for settings not asked
before, so no cache answers. The median and 95th percentile are in ``extra_info`` and
printed with ``-s``, with the medians of the engine's part (the library call, timed by the
server) and of the rest (request, transfer, decoding, redraw); there are no thresholds.

Run: ``python -m pytest benchmarks/test_explore.py -s --benchmark-json=explore.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from fastsurface.explorer import Explorer
from fastsurface.explorer.problem import SeedProblem

pytest.importorskip("PIL")
pytest.importorskip("starlette")
from tests.system.browser import CHROMIUM, NEEDS_CHROMIUM, Browser, ExplorerPage

pytestmark = NEEDS_CHROMIUM


WINDOW_ROUNDS, PATH_ROUNDS = 20, 5


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The seed problem's page (default settings) in a 1300 x 900 tab."""
    browser = Browser(CHROMIUM, tmp_path_factory.mktemp("profile"))
    with Explorer(SeedProblem()).start() as explorer:
        yield ExplorerPage(browser, explorer.url)
        browser.close()


def measure(benchmark, page: ExplorerPage, name: str, interact: Callable[[int], None], rounds: int) -> None:
    """Run ``interact(k)`` for k = 0, 1, ... and record the page's ``name`` measure of each."""
    durations: list[float] = []
    engine: list[float] = []
    rounds_done = iter(range(rounds + 1))

    def one() -> None:
        before = page.evaluate(f"performance.getEntriesByName('{name}', 'measure').length")
        interact(next(rounds_done))
        page.idle()
        entries = page.evaluate(f"performance.getEntriesByName('{name}', 'measure').map((m) => m.duration)")
        assert len(entries) == before + 1, f"expected one new {name!r} measure"
        durations.append(entries[-1])
        seconds = "state.surface.seconds" if name == "surface" else "state.paths.at(-1).answer.seconds"
        engine.append(1e3 * page.state(seconds))

    one()  # warm-up: first use of this kind of request
    durations.clear()
    engine.clear()
    benchmark.pedantic(one, rounds=rounds, iterations=1)
    assert page.errors() == []
    summary = {
        "rounds": rounds,
        "median_ms": float(np.median(durations)),
        "p95_ms": float(np.percentile(durations, 95)),
        "engine_median_ms": float(np.median(engine)),
        # What the rest costs: the request, the answer's transfer and decoding, and the redraw.
        "page_median_ms": float(np.median(np.subtract(durations, engine))),
        "durations_ms": durations,
    }
    benchmark.extra_info.update(summary)
    print(
        f"\n{benchmark.name}: input to redraw median {summary['median_ms']:.0f} ms, p95 {summary['p95_ms']:.0f} ms "
        f"({rounds} rounds; medians: engine {summary['engine_median_ms']:.0f} ms, "
        f"the rest {summary['page_median_ms']:.0f} ms)"
    )


@pytest.mark.parametrize("view", ["contour", "heatmap"])
def test_a_new_200_by_200_window(benchmark, page, view):
    page.evaluate(f"(() => {{ const radio = document.querySelector('[value={view}]'); radio.checked = true; }})()")

    def type_window(k: int) -> None:  # [-2, 2) shifted by k thousandths, step 0.02: 200 x 200
        shift = (k + (100 if view == "heatmap" else 0)) / 1000
        page.type({"w1_start": -2 + shift, "w1_stop": 2 + shift, "w2_start": -2, "w2_stop": 2, "step": 0.02})

    measure(benchmark, page, "surface", type_window, WINDOW_ROUNDS)
    assert page.state("[state.surface.w1.length, state.surface.w2.length]") == [200, 200]


def test_a_zoom(benchmark, page):
    page.evaluate("(() => { const radio = document.querySelector('[value=contour]'); radio.checked = true; })()")
    page.type({"w1_start": -2, "w1_stop": 2, "w2_start": -2, "w2_stop": 2, "step": 0.05})
    page.idle()

    def zoom(k: int) -> None:  # a box of 1.5 x 1.2 moved by k hundredths
        ranges = {"xaxis.range": [-1.0 + k / 100, 0.5 + k / 100], "yaxis.range": [-0.5, 0.7]}
        page.evaluate(f"Plotly.relayout(document.getElementById('plot'), {json.dumps(ranges)}).then(() => null)")

    measure(benchmark, page, "surface", zoom, WINDOW_ROUNDS)
    assert page.state("Math.max(state.surface.w1.length, state.surface.w2.length)") == 200


def test_a_new_25_epoch_path(benchmark, page):
    page.type({"w1_start": -2, "w1_stop": 2, "w2_start": -2, "w2_stop": 2, "step": 0.05})
    page.type({"epochs": 25}, event=None)
    page.idle()

    def new_learning_rate(k: int) -> None:
        page.type({"lr": f"{0.01 + k / 10_000:.4f}"})

    measure(benchmark, page, "path", new_learning_rate, PATH_ROUNDS)
    assert page.state("state.paths.at(-1).answer.step.at(-1)") == 25 * 125
