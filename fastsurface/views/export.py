"""Writing figures: self-contained HTML by default, PNG or SVG through kaleido.

HTML embeds plotly.js (about 4.6 MB) so the file opens offline; ``plotlyjs="cdn"``
writes a small file that loads plotly.js from its CDN instead. PNG and SVG are
rendered by kaleido, which drives a Chromium or Chrome browser installed on the
machine. Every file is written atomically: a reader never sees half of one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from fastsurface._support.files import atomic_write, check_writable
from fastsurface.errors import FastsurfaceError, check_choice
from fastsurface.views._html import figure_html

FORMATS = {".html": "html", ".htm": "html", ".png": "png", ".svg": "svg"}
PLOTLYJS = ("embed", "cdn")
_INSTALL_KALEIDO = "PNG and SVG export needs the kaleido package (>= 1.0): pip install 'fastsurface[image]'"
_INSTALL_CHROMIUM = (
    "PNG and SVG export needs a Chromium or Chrome browser, and kaleido found none: install one "
    "(Debian/Ubuntu: apt-get install chromium; elsewhere: run plotly_get_chrome), or point the "
    "BROWSER_PATH environment variable at its executable"
)


def write_figure(
    figure: go.Figure | Mapping[str, Any], path: str | os.PathLike[str], *, plotlyjs: str = "embed"
) -> Path:
    """Write ``figure`` to ``path``, in the format its suffix names.

    Args:
        figure: a plotly figure, e.g. from ``plot_surface`` or ``plot_contour``, or plain
            figure data ``{"data": [...], "layout": {...}}`` in dicts, lists, numbers,
            strings and NumPy arrays (``surface_figure`` makes one): written to HTML as
            given, without building plotly's objects, and so without plotly's validation
            (``go.Figure(figure)`` validates it).
        path: ``.html`` / ``.htm`` (interactive; a figure without a width and height
            fills the browser window), ``.png`` or ``.svg`` (static, at the figure's
            width and height in pixels, plotly's 700 x 500 where it sets none), in an
            existing folder.
        plotlyjs: for HTML, ``"embed"`` plotly.js (works offline) or load it from the
            ``"cdn"``.

    Returns:
        The path written.

    Raises:
        FastsurfaceError: for a bad path or option, and for PNG/SVG when kaleido or a
            browser is missing (the message says how to install them), before any
            rendering.
    """
    plain = isinstance(figure, Mapping)  # checked first: touching go.Figure imports plotly's objects
    if plain and not set(figure) <= {"data", "layout"}:
        raise FastsurfaceError(f"`figure` as plain data holds only 'data' and 'layout', got keys {sorted(figure)}")
    if not plain and not isinstance(figure, go.Figure):
        raise FastsurfaceError(f"`figure` must be a plotly Figure or plain figure data, got {type(figure).__name__}")
    target = check_export("path", path, plotlyjs)
    if FORMATS[target.suffix.lower()] == "html":
        page = _html(figure, plotlyjs)
        atomic_write(target, lambda file: file.write(page))
        return target
    try:
        image = (figure if isinstance(figure, go.Figure) else go.Figure(figure)).to_image(
            format=FORMATS[target.suffix.lower()]
        )
    except RuntimeError as error:  # plotly's way of saying kaleido found no browser
        raise FastsurfaceError(f"{_INSTALL_CHROMIUM} ({error})") from error
    atomic_write(target, lambda file: file.write(image))
    return target


def _html(figure: go.Figure | Mapping[str, Any], plotlyjs: str) -> bytes:
    """The page of ``figure``, UTF-8."""
    if not isinstance(figure, Mapping):
        include = True if plotlyjs == "embed" else "cdn"
        fragment = figure.to_html(include_plotlyjs=include, full_html=False, auto_play=False)
        # As figure_html's page: a figure without a size fills the window, without scroll bars.
        fills = figure.layout.width is None and figure.layout.height is None
        style = "html, body, body > div {height: 100%; margin: 0;" + (" overflow: hidden;}" if fills else "}")
        head = f'<!doctype html>\n<html>\n<head>\n<meta charset="utf-8" />\n<style>{style}</style>\n</head>\n<body>\n'
        return (head + fragment + "\n</body>\n</html>").encode()
    try:
        return figure_html(figure, plotlyjs)
    except TypeError as error:
        raise FastsurfaceError(
            f"`figure` as plain data holds dicts, lists, numbers, strings and NumPy arrays ({error}); "
            "pass go.Figure(figure) for anything else"
        ) from error


def check_export(name: str, path: str | os.PathLike[str], plotlyjs: str = "embed") -> Path:
    """Refuse, before any work, an output that ``write_figure`` could not write.

    Args:
        name: the argument's name, for messages (e.g. ``"--output"``).
        path, plotlyjs: as in ``write_figure``.
    """
    target = check_writable(name, path, tuple(FORMATS))
    check_choice("plotlyjs", plotlyjs, PLOTLYJS)
    if FORMATS[target.suffix.lower()] != "html":
        check_image_export()
    return target


def check_image_export() -> None:
    """Raise ``FastsurfaceError`` saying what to install unless kaleido and a browser are present."""
    try:
        import kaleido  # noqa: F401
        from choreographer.browsers.chromium import Chromium  # kaleido's browser driver
    except ImportError as error:
        raise FastsurfaceError(_INSTALL_KALEIDO) from error
    if not os.environ.get("BROWSER_PATH") and Chromium.find_browser(skip_local=False) is None:
        raise FastsurfaceError(_INSTALL_CHROMIUM)
