"""The explorer driven like a person in headless Chromium: type a value, move a slider, drag a
zoom box, click a start. Each time the figure must hold the library's numbers for the same
settings, and the page must report no JavaScript error.

Skipped where no ``chromium`` is installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.explorer import Explorer
from fastsurface.explorer.problem import SeedProblem

pytest.importorskip("PIL")
pytest.importorskip("starlette")
from tests.system.browser import CHROMIUM, NEEDS_CHROMIUM, Browser, ExplorerPage, drawn_share, plot_area_picture

pytestmark = [
    NEEDS_CHROMIUM,
    pytest.mark.slow,
]


# Small data, so that paths train in a fraction of a second.
SMALL = {"epochs": 2, "samples": 1000}  # typing fires on the last: samples, which trains nothing
MIN_SHARE = 0.05
# A filled contour or heatmap: no single colour covers this share of the plot area.
FILLED = 0.5


@pytest.fixture(scope="module")
def served():
    """An explorer of the seed problem on a free loopback port, and its problem."""
    problem = SeedProblem()
    with Explorer(problem).start() as explorer:
        yield explorer, problem


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Browser(CHROMIUM, tmp_path_factory.mktemp("profile"))
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser, served):
    return ExplorerPage(browser, served[0].url)


def seed_split(samples: int = 10_000):
    return fs.train_test_split(*fs.piecewise_dataset(samples, seed=42), seed=0)


def assert_surface_drawn_is(figure: list[dict], expected: fs.Surface) -> None:
    """The first trace is ``expected``: ``w1`` on x, ``w2`` on y, ``z[j][i]`` the loss at ``(w1[i], w2[j])``."""
    trace = figure[0]
    assert trace["x"] == expected.w1.tolist() and trace["y"] == expected.w2.tolist()
    np.testing.assert_array_equal(np.array(trace["z"]), expected.loss.T)


def test_the_first_view_is_the_library_surface(browser, page):
    figure = page.figure()
    assert figure[0]["type"] == "contour"
    grid = fs.axis(-2, 2, 0.05)
    assert_surface_drawn_is(figure, fs.loss_surface(fs.ANN(1, 1, 1), seed_split()[1], grid, grid))
    assert drawn_share(plot_area_picture(browser, page.session, MIN_SHARE)) >= MIN_SHARE
    assert "80 x 80 grid, 2,000 test samples" in page.evaluate("document.getElementById('status').textContent")
    assert page.errors() == []


def test_typed_settings_redraw_the_library_surface(page):
    page.type({"samples": 1000, "split_seed": 3, "reduction": "batch_mean", "batch_size": 50, "step": 0.1})
    page.idle()
    _, test = fs.train_test_split(*fs.piecewise_dataset(1000, seed=42), seed=3)
    expected = fs.loss_surface(
        fs.ANN(1, 1, 1), test, fs.axis(-2, 2, 0.1), fs.axis(-2, 2, 0.1), reduction="batch_mean", batch_size=50
    )
    assert_surface_drawn_is(page.figure(), expected)
    assert page.errors() == []


def test_a_bad_value_shows_its_error_and_the_page_keeps_working(page, served):
    page.type({"step": -1})
    page.idle()
    assert page.evaluate("document.getElementById('error').hidden") is False
    assert "`step` must be > 0, got -1.0" in page.evaluate("document.getElementById('error').textContent")
    assert page.evaluate("document.querySelector('[name=step]').classList.contains('invalid')")
    page.type({"step": 0.25})
    page.idle()
    assert page.evaluate("document.getElementById('error').hidden") is True
    expected = fs.loss_surface(fs.ANN(1, 1, 1), seed_split()[1], fs.axis(-2, 2, 0.25), fs.axis(-2, 2, 0.25))
    assert_surface_drawn_is(page.figure(), expected)
    # Chromium logs the refused request itself; the page throws nothing.
    assert page.errors() == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]


def test_dragging_a_zoom_box_recomputes_that_window_finer(page):
    before = page.state("state.surfaceRequest")
    start, end = page.plot_point(0.4, 0.3), page.plot_point(0.6, 0.5)
    page.mouse("mouseMoved", *start)
    page.mouse("mousePressed", *start, pressed=True)
    for k in range(1, 11):
        page.mouse("mouseMoved", *(a + (b - a) * k / 10 for a, b in zip(start, end, strict=True)), pressed=True)
    page.mouse("mouseReleased", *end)
    page.idle()
    window = page.state("state.surfaceRequest")
    (w1_start, w1_stop), (w2_start, w2_stop) = window["w1"], window["w2"]
    assert before["w1"][0] < w1_start < w1_stop < before["w1"][1]
    assert before["w2"][0] < w2_start < w2_stop < before["w2"][1]
    assert window["step"] < before["step"]
    grid = fs.axis(w1_start, w1_stop, window["step"]), fs.axis(w2_start, w2_stop, window["step"])
    assert max(map(len, grid)) in range(190, 202)  # ~200 values on the wider axis
    assert_surface_drawn_is(page.figure(), fs.loss_surface(fs.ANN(1, 1, 1), seed_split()[1], *grid))
    assert page.errors() == []


def test_clicking_the_plot_trains_from_there_and_animates_the_path(browser, page):
    page.type(SMALL)
    page.idle()
    page.mouse("mouseMoved", *page.plot_point(0.7, 0.25))
    time.sleep(0.2)  # plotly picks the point under the pointer on hover
    page.mouse("mousePressed", *page.plot_point(0.7, 0.25))
    page.mouse("mouseReleased", *page.plot_point(0.7, 0.25))
    page.idle()
    start = page.state("state.paths[0].start")
    assert 0 < start[0] < 2 and 0 < start[1] < 2  # the upper right quarter of [-2, 2)²
    expected = fs.train_sgd(fs.ANN(1, 1, 1), *seed_split(1000), epochs=2, start=tuple(start))
    path = next(trace for trace in page.figure() if trace["name"].startswith("sgd"))
    assert path["x"] == expected.w1.tolist() and path["y"] == expected.w2.tolist()
    deadline = time.monotonic() + 30
    while page.state("state.animation.index") < len(expected.w1) - 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    marker = page.evaluate("document.getElementById('plot').layout.shapes[0]")
    assert (marker["xanchor"], marker["yanchor"]) == (expected.w1[-1], expected.w2[-1])
    # The contour stays filled while the marker moves: no colour covers half the plot area.
    assert drawn_share(plot_area_picture(browser, page.session, FILLED)) >= FILLED
    assert page.errors() == []


def test_a_burst_of_slider_moves_trains_only_the_last_value(page, served):
    _, problem = served
    page.type(SMALL)
    page.idle()
    trained = problem.path.cache_info().misses
    page.evaluate(
        """(() => {
          const slider = document.getElementById('settings').elements.lr_slider;
          for (let k = 0; k < 20; k += 1) {
            slider.value = String(-2.5 + k * 0.05);
            slider.dispatchEvent(new Event('input', {bubbles: true}));
          }
        })()"""
    )
    page.idle()
    lr = float(page.evaluate("document.querySelector('[name=lr]').value"))
    assert lr == float(f"{10 ** (-2.5 + 19 * 0.05):.3g}")
    assert problem.path.cache_info().misses - trained < 5  # not 20: queued moves were dropped or aborted
    expected = fs.train_sgd(fs.ANN(1, 1, 1), *seed_split(1000), lr=lr, epochs=2)
    (path,) = [trace for trace in page.figure() if trace["name"].startswith("sgd")]
    assert path["x"] == expected.w1.tolist() and path["y"] == expected.w2.tolist()
    assert page.errors() == []


def test_several_starts_and_optimisers_overlay_with_a_legend_until_cleared(page):
    page.type({"start_w1": 1.0, "start_w2": 1.0, **SMALL})
    page.click("#add-path")
    page.type({"optimiser": "adam", "start_w1": -0.5, "start_w2": 1.5})  # for the next path only
    page.click("#add-path")
    page.idle()
    names = [trace["name"] for trace in page.figure()[1:]]
    assert names == ["sgd lr=0.01, 2 epochs from (1, 1)", "adam lr=0.01, 2 epochs from (-0.5, 1.5)"]
    assert page.evaluate("document.getElementById('plot').layout.showlegend") is not False
    page.click("#clear-paths")
    page.idle()
    assert [trace["name"] for trace in page.figure()] == ["loss"]
    assert page.errors() == []


@pytest.mark.parametrize("view", ["surface", "heatmap"])
def test_every_view_draws_with_log_colour_and_critical_points(browser, page, view):
    page.type({"step": 0.1})
    page.evaluate(
        f"""(() => {{
          const form = document.getElementById('settings');
          form.elements.log_color.checked = true;
          form.elements.critical_points.checked = true;
          form.elements.critical_points.dispatchEvent(new Event('change', {{bubbles: true}}));
          form.querySelector('[value={view}]').checked = true;
          form.querySelector('[value={view}]').dispatchEvent(new Event('change', {{bubbles: true}}));
        }})()"""
    )
    page.idle()
    figure = page.figure()
    assert figure[0]["type"] == view and "saddle" in [trace["name"] for trace in figure]
    assert drawn_share(plot_area_picture(browser, page.session, MIN_SHARE)) >= MIN_SHARE
    assert page.errors() == []


def test_many_starts_shows_the_library_basin_map_until_another_input(browser, page):
    """A 6 x 6 grid of starts over the window [-2, 2)², two epochs each: the page shows
    ``plot_basins`` of ``train_many`` and ``basin_map`` for the same settings."""
    page.type({"points": 6, "step": 0.1, **SMALL})
    page.click("#many-starts")
    page.idle()
    axis = np.linspace(-2, 2, 6, endpoint=False)
    runs = fs.train_many(
        fs.ANN(1, 1, 1),
        *seed_split(1000),
        grid=(axis, axis),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01),
        epochs=2,
        evaluate="final",
    )
    expected = fs.basin_map(runs)
    basins = page.state("state.basins")
    assert basins["runs"] == 36 and basins["diverged"] == int(expected.diverged.sum())
    assert [a["size"] for a in basins["attractors"]] == expected.sizes.tolist()
    located = [[a["w1"], a["w2"]] for a in basins["attractors"]]
    np.testing.assert_allclose(located, expected.attractors, rtol=0, atol=1e-12)
    figure = page.figure()
    assert (figure[0]["type"], figure[0]["name"]) == ("heatmap", "fate")
    # The figure's arrays travel as plotly's typed arrays; plotly.js decodes them for drawing.
    drawn = page.evaluate("['x', 'y'].map((k) => Array.from(document.getElementById('plot')._fullData[0][k]))")
    np.testing.assert_allclose(drawn, [axis, axis], rtol=0, atol=1e-12)
    assert "contour" in [trace["type"] for trace in figure]  # the window's surface over the map
    assert "basin map: 36 runs" in page.evaluate("document.getElementById('status').textContent")
    assert drawn_share(plot_area_picture(browser, page.session, MIN_SHARE)) >= MIN_SHARE
    page.type({"step": 0.2})  # any other input returns to the surface
    page.idle()
    assert page.state("state.basins") is None and page.figure()[0]["type"] == "contour"
    assert page.errors() == []
