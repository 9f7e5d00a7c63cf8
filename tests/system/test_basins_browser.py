"""The basins figure opened in headless Chromium: no JavaScript error, a map that is drawn.

Skipped where no ``chromium`` is installed; ``.ci/run`` installs it.
"""

import pytest

from fastsurface.cli import main

pytest.importorskip("PIL")
from tests.system.browser import CHROMIUM, NEEDS_CHROMIUM, Browser, drawn_share, plot_area_picture

pytestmark = [
    NEEDS_CHROMIUM,
    pytest.mark.slow,
]


# A drawn map: at least this share of the plot area off the background, in this many colours.
MIN_SHARE, MIN_COLOURS = 0.5, 6


@pytest.mark.parametrize("color", ["attractor", "loss", "time"])
def test_the_basin_map_renders_without_console_errors(tmp_path, color):
    page = tmp_path / "basins.html"
    small = ["--step", "0.25", "--samples", "1000", "--epochs", "2", "--no-progress"]
    assert main(["basins", "--output", str(page), "--color", color, "--watershed", "--critical-points", *small]) == 0
    browser = Browser(CHROMIUM, tmp_path / "profile")
    try:
        session = browser.open(page)
        picture = plot_area_picture(browser, session, MIN_SHARE)
        assert browser.console_errors(session) == []
        assert drawn_share(picture) >= MIN_SHARE, f"the {color} map's plot area is blank"
        assert len(picture.getcolors(maxcolors=picture.width * picture.height)) >= MIN_COLOURS
    finally:
        browser.close()
