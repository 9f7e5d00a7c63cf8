"""The explorer's web application: one page, plotly.js, and a few JSON endpoints.

Routes:

- ``GET /``: the page; ``GET /static/...``: its script and style; ``GET /plotly.min.js``:
  plotly.js from the installed plotly package (no network needed).
- ``GET /api/config``: the problem's labels, the page's starting settings and limits.
- ``POST /api/surface``: a surface (see ``settings.surface_request``): its axes, its
  losses as base64 float64 (exact, and far faster to write than JSON text), the
  colouring, and critical points on request.
- ``POST /api/path``: a training path (see ``settings.path_request``).
- ``POST /api/basins``: a basin map of many starts over the window (see
  ``settings.basins_request``): the library's ``plot_basins`` figure as plotly JSON and
  a summary of the runs.
- ``POST /api/download``: the current view as HTML or PNG (through the library's
  views and ``write_figure``) or the surface as ``.npz`` (``save``).

Bodies are JSON objects of plain values, checked by ``settings``; engine work runs on
the single worker of ``latest`` (the latest request of a page wins). A
``FastsurfaceError`` (a bad value, a grid that does not fit in memory) is answered
with HTTP 400 and ``{"error": message}``; a superseded request with 409, one that waited
while the server stops with 503.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import plotly.colors
import plotly.io
import plotly.offline
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import fastsurface as fs
from fastsurface.errors import FastsurfaceError
from fastsurface.explorer import settings
from fastsurface.explorer.latest import LatestWins, StoppingError, SupersededError
from fastsurface.explorer.problem import Problem
from fastsurface.views.export import check_image_export
from fastsurface.views.planar import KIND_MARKERS, loss_colouring

T = TypeVar("T")
# Host names a loopback server answers to; any other Host header is refused, so a web
# page elsewhere cannot reach the explorer through a DNS name rebound to 127.0.0.1.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
# Request bodies are a few hundred bytes; a download with MAX_PATHS paths a few KiB.
_MAX_BODY_BYTES = 64 * 1024
# The page runs only the scripts it is served from here (no inline script, no eval);
# plotly sets inline styles. A violation is a console error, which the browser tests catch.
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_MEDIA_TYPES = {"html": "text/html", "png": "image/png", "npz": "application/zip"}


def build_app(problem: Problem, *, loopback: bool = True, warm_up: bool = True) -> Starlette:
    """The explorer's ASGI application for ``problem``.

    Args:
        problem: what the page explores.
        loopback: answer only requests addressed to a loopback host name (``Host``
            header); ``False`` for a server bound to another interface.
        warm_up: on start-up, compute the page's first surface and a one-epoch path on
            the worker, so that the first interaction does not pay for torch's lazy
            imports (the optimisers import ``torch._dynamo``: seconds).
    """
    worker = LatestWins()
    page = (resources.files("fastsurface.explorer") / "static" / "index.html").read_text(encoding="utf-8")
    config = _config(problem)

    async def index(_: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-store"})

    async def plotly_js(_: Request) -> Response:
        return Response(_plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def configuration(_: Request) -> Response:
        return JSONResponse(config)

    async def surface(request: Request) -> Response:
        query = settings.surface_request(await _body(request), problem.defaults, problem.seed_data)
        answer = await _run(worker, query.ticket, ("surface",), lambda: surface_answer(problem, query))
        return JSONResponse(answer)

    async def path(request: Request) -> Response:
        query = settings.path_request(await _body(request), problem.defaults, problem.seed_data)
        answer = await _run(worker, query.ticket, ("path", query.path), lambda: path_answer(problem, query.settings))
        return JSONResponse(answer)

    async def basins(request: Request) -> Response:
        query = settings.basins_request(await _body(request), problem.defaults, problem.seed_data)
        answer = await _run(worker, query.ticket, ("basins",), lambda: basins_answer(problem, query))
        return Response(answer, media_type="application/json")

    async def download(request: Request) -> Response:
        query = settings.download_request(await _body(request), problem.defaults, problem.seed_data)
        if query.format == "png" and config["png"] is not None:
            raise FastsurfaceError(str(config["png"]))
        name, content = await _run(worker, query.ticket, ("download",), lambda: download_file(problem, query))
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(content, media_type=_MEDIA_TYPES[query.format], headers=headers)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        warming = asyncio.ensure_future(worker.run(None, 0, lambda: _warm_up(problem))) if warm_up else None
        if warming is not None:  # a failure shows again, with its message, on the page's first request
            warming.add_done_callback(lambda task: task.cancelled() or task.exception())
        yield
        if warming is not None and not warming.done():
            warming.cancel()
        worker.close()

    allowed = LOOPBACK_HOSTS if loopback else ["*"]
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/plotly.min.js", plotly_js),
            Route("/api/config", configuration),
            Route("/api/surface", surface, methods=["POST"]),
            Route("/api/path", path, methods=["POST"]),
            Route("/api/basins", basins, methods=["POST"]),
            Route("/api/download", download, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("fastsurface.explorer", "static")])),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed, www_redirect=False)],
        exception_handlers={
            FastsurfaceError: _refused,
            SupersededError: _superseded,
            StoppingError: _stopping,
            HTTPException: _http_error,
            Exception: _failed,
        },
        lifespan=lifespan,
    )
    app.state.worker = worker
    return app


class ExplorerServer(uvicorn.Server):
    """uvicorn's server for an app of ``build_app``: on stopping it first closes the app's
    engine worker, so queued requests are answered at once (HTTP 503) and the running one
    finishes and is answered; then the server stops (a second Ctrl-C stops it at once)."""

    def __init__(self, app: Starlette, **options: Any) -> None:
        super().__init__(uvicorn.Config(app, **options))
        self._worker: LatestWins = app.state.worker

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._worker.close()
        await super().shutdown(sockets=sockets)


def surface_answer(problem: Problem, request: settings.SurfaceRequest) -> dict[str, Any]:
    """The page's surface: ``w1``, ``w2`` (lists), ``loss`` (``encoded``, shape
    ``(len(w1), len(w2))``, rows along ``w1``), ``colour`` (what to colour by, encoded,
    or ``None`` for the loss itself), ``colorbar``, ``critical_points`` and facts
    (``labels``, ``method``, ``seconds``, ``samples``, ``device``)."""
    surface = problem.surface(request.settings)
    colour, colorbar = loss_colouring(surface.loss, request.log_color)
    points = problem.critical_points(request.settings) if request.critical_points else []
    return {
        "w1": surface.w1.tolist(),
        "w2": surface.w2.tolist(),
        "loss": encoded(surface.loss),
        "colour": encoded(colour) if request.log_color else None,
        "colorbar": colorbar,
        "critical_points": [
            {"w1": p.w1, "w2": p.w2, "loss": p.loss, "kind": p.kind, "eigenvalues": list(p.eigenvalues)} for p in points
        ],
        "labels": list(surface.labels),
        "method": surface.method,
        "seconds": surface.seconds,
        "samples": surface.samples,
        "device": surface.device,
    }


def path_answer(problem: Problem, path: settings.PathSettings) -> dict[str, Any]:
    """The page's path: ``name`` (its legend entry), ``w1``, ``w2``, ``loss`` (``None``
    where not finite), ``step`` and the training's ``seconds`` (0 when cached)."""
    started = time.perf_counter()
    trajectory = problem.path(path)
    return {
        "name": path.name(),
        "w1": trajectory.w1.tolist(),
        "w2": trajectory.w2.tolist(),
        "loss": [float(v) if np.isfinite(v) else None for v in trajectory.loss],
        "step": trajectory.step.tolist(),
        "seconds": time.perf_counter() - started,
    }


def basins_answer(problem: Problem, request: settings.BasinRequest) -> str:
    """The page's basin map, JSON: ``figure`` (``plot_basins`` over the window's surface,
    with a few sample paths and, on request, the critical points) and the facts the
    page prints: ``runs``, ``diverged``, ``attractors`` (``w1``, ``w2``, ``size`` each,
    largest basin first), ``method`` and ``seconds`` (0 when cached)."""
    started = time.perf_counter()
    basins, runs = problem.basins(request.settings)
    surface = problem.surface(request.surface.settings)
    points = problem.critical_points(request.surface.settings) if request.surface.critical_points else []
    figure = fs.plot_basins(basins, surface, paths=runs, critical_points=points)
    facts = {
        "runs": runs.count,
        "diverged": int((basins.attractor < 0).sum()),
        "attractors": [
            {"w1": float(w1), "w2": float(w2), "size": int(size)}
            for (w1, w2), size in zip(basins.attractors, basins.sizes, strict=True)
        ],
        "method": runs.method,
        "seconds": time.perf_counter() - started,
    }
    # The figure's JSON as plotly writes it (NumPy arrays included), spliced in unparsed.
    return json.dumps(facts)[:-1] + ', "figure": ' + plotly.io.to_json(figure, validate=False) + "}"


def download_file(problem: Problem, request: settings.DownloadRequest) -> tuple[str, bytes]:
    """``(file name, content)`` of the page's view, written by the library.

    A figure draws every path on a 2-D view and the last one on the 3-D view (which
    draws one); the ``.npz`` file holds the surface, the last path and the plane."""
    surface = problem.surface(request.surface.settings)
    paths = dict(zip(_distinct([path.name() for path in request.paths]), map(problem.path, request.paths), strict=True))
    last = problem.path(request.paths[-1]) if request.paths else None
    with tempfile.TemporaryDirectory(prefix="fastsurface-explore-") as folder:
        if request.format == "npz":
            provenance = {
                "explore": {
                    "surface": dataclasses.asdict(request.surface.settings),
                    "paths": [dataclasses.asdict(path) for path in request.paths],
                }
            }
            name = "loss_surface.npz"
            fs.save(Path(folder) / name, surface=surface, trajectory=last, plane=problem.plane, provenance=provenance)
        else:
            points = problem.critical_points(request.surface.settings) if request.surface.critical_points else []
            log_color = request.surface.log_color
            if request.view == "surface":
                figure = fs.plot_surface(surface, last, critical_points=points, log_color=log_color)
            else:
                figure = fs.plot_contour(surface, paths or None, points, kind=request.view, log_color=log_color)
            name = f"loss_surface-{request.view}.{request.format}"
            fs.write_figure(figure, Path(folder) / name)
        return name, (Path(folder) / name).read_bytes()


def _distinct(names: list[str]) -> list[str]:
    """``names`` with a repeated one numbered (``"... (2)"``): a legend name leaves settings
    out (the batch size) or rounds them (``lr``), and two paths must not share one key."""
    seen: dict[str, int] = {}
    distinct = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        distinct.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return distinct


def _warm_up(problem: Problem) -> None:
    """Compute the page's first surface and a one-epoch path of the default settings."""
    first = settings.surface_request({}, problem.defaults, problem.seed_data)
    path = settings.path_request({"path": "warm", "epochs": 1}, problem.defaults, problem.seed_data)
    problem.surface(first.settings)
    problem.path(path.settings)


def encoded(values: np.ndarray) -> dict[str, Any]:
    """A float64 array as ``{"dtype": "float64", "shape": [...], "base64": ...}``: its
    little-endian bytes in C order, so every value (inf and NaN too) arrives exactly."""
    data = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return {"dtype": "float64", "shape": list(values.shape), "base64": base64.b64encode(data).decode("ascii")}


async def _run(worker: LatestWins, ticket: settings.Ticket | None, kind: tuple[str, ...], work: Callable[[], T]) -> T:
    if ticket is None:
        return await worker.run(None, 0, work)
    return await worker.run((ticket.client, *kind), ticket.seq, work)


async def _body(request: Request) -> object:
    """The request's JSON body; only ``application/json`` is read (a page elsewhere
    cannot send it without the browser asking this server first, which it refuses)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "requests must be sent as application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY_BYTES:
            raise HTTPException(413, f"request bodies may hold at most {_MAX_BODY_BYTES:,} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # RecursionError: nested too deep
        raise FastsurfaceError(f"the request body must be JSON: {error}") from None


def _config(problem: Problem) -> dict[str, Any]:
    """What the page needs before its first request."""
    try:
        check_image_export()
        png = None
    except FastsurfaceError as error:
        png = str(error)
    return {
        "labels": list(problem.labels),
        "defaults": problem.defaults,
        "seed_data": problem.seed_data,
        "optimisers": settings.OPTIMISERS,
        "reductions": settings.REDUCTIONS,
        "views": settings.VIEWS,
        "zoom_points": settings.ZOOM_POINTS,
        "max_grid_points": settings.MAX_GRID_POINTS,
        "png": png,
        "kind_markers": KIND_MARKERS,
        "palette": plotly.colors.qualitative.Plotly,
        "template": plotly.io.templates["plotly_dark"].to_plotly_json(),
    }


@functools.cache
def _plotly_js() -> bytes:
    """plotly.js of the installed plotly package (4.6 MB), read once."""
    return plotly.offline.get_plotlyjs().encode("utf-8")


async def _refused(_: Request, error: Exception) -> Response:
    return JSONResponse({"error": str(error)}, status_code=400)


async def _superseded(_: Request, error: Exception) -> Response:
    return JSONResponse({"error": f"superseded: {error}", "superseded": True}, status_code=409)


async def _stopping(_: Request, error: Exception) -> Response:
    return JSONResponse({"error": str(error)}, status_code=503)


async def _http_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


async def _failed(_: Request, error: Exception) -> Response:
    return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)
