"""The explorer: a local web page that keeps the engine warm.

``fastsurface explore`` (or ``fs.explore()`` from Python, for any model and plane) serves
one page on 127.0.0.1: the loss surface as a 3-D surface, contour or heatmap, recomputed
when the window, step, data or reduction change and when the plot is zoomed or panned;
training paths started by a click, drawn, animated and overlaid with a legend; downloads
of the view (HTML, PNG) and of the surface (``.npz``). It sits beside ``cli`` and
``views``: it calls the public API, and the engine never imports it.

Layout: ``settings`` (what a request may ask, validated), ``problem`` (the library calls
that answer it), ``latest`` (the single engine worker where the latest request wins),
``server`` (the Starlette application), ``launch`` (``explore`` and the uvicorn server),
``static/`` (the page).
"""

from fastsurface.explorer.launch import Explorer, explore

__all__ = ["Explorer", "explore"]
