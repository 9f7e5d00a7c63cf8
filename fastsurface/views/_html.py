"""The HTML page of a plain figure, written without building plotly's objects.

A plain figure is plotly's figure data, ``{"data": [...], "layout": {...}}``, in dicts,
lists, numbers, strings and NumPy arrays (``surface_figure`` makes one). ``plotly.io.to_html``
would first import plotly's validators and build a ``go.Figure`` (a few tenths of a second);
this writes the page it writes, with the same JSON rules (non-finite numbers become
``null``; ``<``, ``>`` and ``/`` are escaped, so no text can close the script), a
responsive config, and a page whose plot fills the browser window unless the layout
fixes a size. A layout's template given by name, and plotly.js, are read from plotly's own files, as
``plotly.io.templates`` and ``plotly.offline.get_plotlyjs`` read them; other template
names (registered, or joined by ``+``) go through ``plotly.io.templates``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pkgutil
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.io
import plotly.offline

# One figure a page: a fixed element id keeps the file the same for the same figure.
_ELEMENT = "fastsurface-figure"
_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "/": "\\u002f"}
_TEMPLATE_NAME = re.compile(r"^\w+$")


def figure_html(figure: Mapping[str, Any], plotlyjs: str) -> bytes:
    """The full HTML page of ``figure``, UTF-8, with plotly.js embedded (``"embed"``) or
    loaded from its CDN (``"cdn"``). Bytes, so that plotly.js's 4.6 MB go from its file to
    the page without being decoded and encoded again."""
    layout = dict(figure.get("layout") or {})
    template = layout.get("template")
    template = _template_data(plotly.io.templates.default if template is None else template)
    if template is not None:
        layout["template"] = template
    template_layout = template.get("layout", {}) if isinstance(template, Mapping) else {}
    width, height = (_css_size(layout.get(name, template_layout.get(name))) for name in ("width", "height"))
    # A window-filling plot never needs scroll bars, and one that appears while the window
    # shrinks would leave the plot sized to the smaller area.
    overflow = " overflow: hidden;" if width == height == "100%" else ""
    script = (
        f'window.PLOTLYENV=window.PLOTLYENV || {{}}; if (document.getElementById("{_ELEMENT}")) '
        f'{{ Plotly.newPlot("{_ELEMENT}", {_json(figure.get("data") or [])}, {_json(layout)}, '
        f"{_json({'responsive': True})}); }}"
    )
    head = f"""<!doctype html>
<html>
<head>
    <meta charset="utf-8" />
    <style>html, body {{height: 100%; margin: 0;{overflow}}}</style>
</head>
<body>
    <div style="height:{height}; width:{width};">
        <script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
        """
    tail = f"""
        <div id="{_ELEMENT}" class="plotly-graph-div" style="height:100%; width:100%;"></div>
        <script>{script}</script>
    </div>
</body>
</html>"""
    return head.encode() + _load_plotlyjs(plotlyjs) + tail.encode()


def _load_plotlyjs(plotlyjs: str) -> bytes:
    source = pkgutil.get_data("plotly", "package_data/plotly.min.js") or plotly.offline.get_plotlyjs().encode()
    if plotlyjs == "embed":
        return b"<script>" + source + b"</script>"
    integrity = "sha256-" + base64.b64encode(hashlib.sha256(source).digest()).decode()
    url = f"https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"
    return f'<script charset="utf-8" src="{url}" integrity="{integrity}" crossorigin="anonymous"></script>'.encode()


def _template_data(template: object) -> object:
    """``template`` as plain data: a name resolved as ``plotly.io.templates`` resolves it."""
    if not isinstance(template, str):
        return template
    if _TEMPLATE_NAME.match(template):
        try:
            text = pkgutil.get_data("plotly", f"package_data/templates/{template}.json")
        except OSError:  # not one of plotly's files: a registered name
            text = None
        if text is not None:
            return json.loads(text)
    return plotly.io.templates[template].to_plotly_json()


def _css_size(pixels: object) -> str:
    return "100%" if pixels is None else f"{pixels}px"


def _json(value: object) -> str:
    """Compact JSON that a ``<script>`` can hold; NaN and infinities as ``null``, as plotly writes them."""
    text = json.dumps(value, separators=(",", ":"), default=_plain)
    if "NaN" in text or "Infinity" in text:  # perhaps in a string: parse to find the numbers
        text = json.dumps(json.loads(text, parse_constant=lambda _: None), separators=(",", ":"))
    for unsafe, escaped in _UNSAFE.items():
        text = text.replace(unsafe, escaped)
    return text


def _plain(value: object) -> object:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    to_plotly_json = getattr(value, "to_plotly_json", None)  # a plotly object inside the data
    if callable(to_plotly_json):
        return to_plotly_json()
    raise TypeError(f"{type(value).__name__} is no plain figure data")
