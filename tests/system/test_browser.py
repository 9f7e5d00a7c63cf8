"""Every HTML view opened in headless Chromium: no JavaScript error, a plot that is drawn.

Skipped where no ``chromium`` is installed; ``.ci/run`` installs it.
"""

import time

import plotly.graph_objects as go
import pytest

import fastsurface as fs
from fastsurface.cli import main

pytest.importorskip("PIL")
from tests.system.browser import CHROMIUM, NEEDS_CHROMIUM, Browser, drawn_share, plot_area_picture

pytestmark = [
    NEEDS_CHROMIUM,
    pytest.mark.slow,
]


CLI_VIEWS = ("surface", "contour", "heatmap", "animation")
EPOCHS = 3
# A drawn plot area: at least this share of pixels off the background, in this many colours.
MIN_SHARE, MIN_COLOURS = 0.05, 50


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Browser(CHROMIUM, tmp_path_factory.mktemp("profile"))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The command's views (with critical points and log colouring), and overlaid paths."""
    folder = tmp_path_factory.mktemp("views")
    arguments = ["run", "--output", str(folder / "figure.html"), "--view", ",".join(CLI_VIEWS)]
    small = ["--step", "0.25", "--samples", "2000", "--epochs", str(EPOCHS), "--no-progress"]
    assert main([*arguments, "--critical-points", "--log-color", "--fit-trajectory", *small]) == 0
    train, test = fs.train_test_split(*fs.piecewise_dataset(1000))
    model = fs.ANN(1, 1, 1)
    surface = fs.loss_surface(model, test, fs.axis(-3, 3, 0.2), fs.axis(-3, 3, 0.2))
    paths = {f"lr {lr:g}": fs.train_sgd(model, train, test, lr=lr, epochs=EPOCHS) for lr in (0.003, 0.01, 0.03)}
    fs.write_figure(fs.plot_contour(surface, paths), folder / "figure-overlay.html")
    return {view: folder / f"figure-{view}.html" for view in (*CLI_VIEWS, "overlay")}


@pytest.mark.parametrize("view", [*CLI_VIEWS, "overlay"])
def test_the_view_renders_without_console_errors(browser, pages, view):
    session = browser.open(pages[view])
    picture = plot_area_picture(browser, session, MIN_SHARE)
    assert browser.console_errors(session) == []
    assert drawn_share(picture) >= MIN_SHARE, f"the plot area of {view} is blank"
    assert len(picture.getcolors(maxcolors=picture.width * picture.height)) >= MIN_COLOURS


@pytest.mark.parametrize("view", ["surface", "contour", "animation"])
def test_the_figure_fills_the_window_and_follows_it(browser, pages, view):
    """No fixed size: the figure takes the window's, and plotly's responsive config follows a resize."""
    size = "[0, 1].map((i) => document.querySelector('.js-plotly-plot')._fullLayout[['width', 'height'][i]])"
    session = browser.open(pages[view], width=1200, height=800)
    assert browser.evaluate(size, session) == [1200, 800]
    metrics = {"width": 700, "height": 500, "deviceScaleFactor": 1, "mobile": False}
    browser.send("Emulation.setDeviceMetricsOverride", metrics, session=session)
    deadline = time.monotonic() + 20
    while browser.evaluate(size, session) != [700, 500] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.evaluate(size, session) == [700, 500]
    assert browser.console_errors(session) == []


def test_the_animation_plays_to_its_last_frame(browser, pages):
    session = browser.open(pages["animation"])
    drawn = browser.evaluate(
        """(async () => {
          const plot = document.querySelector('.js-plotly-plot');
          const frames = plot._transitionData._frames;
          const last = frames[frames.length - 1];
          const before = plot._fullData[last.traces[0]].x.length;
          await Plotly.animate(plot, [last.name], {frame: {duration: 0, redraw: false}, transition: {duration: 0}});
          return [before, plot._fullData[last.traces[0]].x.length];
        })()""",
        session,
    )
    assert drawn == [1, EPOCHS + 1]  # the path's first point, then all of it
    assert browser.console_errors(session) == []


def test_the_checks_can_fail(browser, tmp_path):
    """A page with errors is caught, and so is a figure with an empty plot area."""
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>console.error('boom'); null.property;</script></body></html>")
    errors = browser.console_errors(browser.open(broken))
    assert len(errors) == 2 and errors[0] == "boom" and "TypeError" in errors[1]
    empty = fs.write_figure(go.Figure(layout={"xaxis": {"range": [0, 1]}}), tmp_path / "empty.html")
    session = browser.open(empty)
    assert drawn_share(plot_area_picture(browser, session, MIN_SHARE, wait=1.0)) < MIN_SHARE
    assert browser.console_errors(session) == []
