"""Starting the explorer: ``explore`` from Python, ``fastsurface explore`` from the shell.

The web packages (starlette, uvicorn: ``pip install 'fastsurface[explore]'``) are
imported only when a server is built, so ``import fastsurface`` never needs them.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
import webbrowser
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import fastsurface as fs
from fastsurface.errors import FastsurfaceError
from fastsurface.explorer import settings
from fastsurface.explorer.problem import MODEL_DEFAULTS, Problem, SeedProblem

if TYPE_CHECKING:
    from fastsurface.explorer.server import ExplorerServer

_INSTALL = "the explorer needs starlette and uvicorn: pip install 'fastsurface[explore]'"
# Seconds a background server may take to start.
_START_SECONDS = 30.0


def explore(
    model: nn.Module | None = None,
    data: object = None,
    *,
    plane: fs.Plane | None = None,
    train: object = None,
    loss: Any = "mse",
    window: tuple[tuple[float, float], tuple[float, float]] | None = None,
    step: float | None = None,
    device: Any = "auto",
    dtype: Any = torch.float32,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = True,
    block: bool = True,
) -> Explorer:
    """Serve the explorer's page for a model: its loss surface, zoomable, with training
    paths started by a click.

    Without ``model`` and ``data`` it serves the seed problem (the page then also
    chooses the data's size and seeds). The page sends only numbers and choices;
    models and data come only from here.

    Args:
        model: any module (only read); ``None`` for the seed problem.
        data: evaluation data of the surface and the paths' losses, as ``loss_surface``
            takes.
        plane: the plane to show; a model with two scalar weights has a default.
        train: training data of the paths (``data`` by default). Paths train the whole
            model with ``record_path`` from the clicked point and are projected onto
            ``plane`` with ``project_path``; the seed problem's SGD uses ``train_sgd``.
        loss, device, dtype: as in ``loss_surface``.
        window: the first view's ``((w1_start, w1_stop), (w2_start, w2_stop))``;
            ``[-2, 2)²`` for the seed problem, ``[-1, 1)²`` otherwise.
        step: the first view's grid step (0.05 by default).
        host: the interface to listen on. The default, ``127.0.0.1``, serves this
            machine only; any other host prints a warning, since everyone who reaches
            it can make the engine work.
        port: the port, 0 for a free one (see ``Explorer.url``).
        open_browser: open the page in the default web browser.
        block: serve until Ctrl-C (which raises ``KeyboardInterrupt`` once the server
            has stopped); ``False`` starts the server on a background thread and
            returns at once (stop it with ``close()``).

    Returns:
        The ``Explorer``: with ``block=False`` running, otherwise stopped.

    Raises:
        FastsurfaceError: for bad arguments, a model, data and plane that do not fit
            together, a port that cannot be used, or missing web packages.
    """
    problem = _problem(model, data, plane, train, loss, window, step, device, dtype)
    explorer = Explorer(problem, host=host, port=port)
    if not explorer.loopback:
        print(
            f"fastsurface: warning: serving on {host}, not a loopback address: anyone who can reach "
            f"{explorer.url} can make this machine compute",
            file=sys.stderr,
        )
    if not block:
        explorer.start()
        if open_browser:
            webbrowser.open(explorer.url)
        return explorer
    print(f"fastsurface explorer at {explorer.url} (Ctrl-C stops it)", flush=True)
    if open_browser:  # the socket already listens: the browser's request waits for the server
        webbrowser.open(explorer.url)
    explorer.serve()
    return explorer


class Explorer:
    """The explorer's server for ``problem`` on ``host:port`` (0: a free port).

    The socket is bound on creation; ``serve()`` runs the server on this thread,
    ``start()`` on a background thread, ``close()`` stops it. Also a context manager.
    """

    def __init__(self, problem: Problem, *, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            from fastsurface.explorer.server import ExplorerServer, build_app
        except ImportError as error:
            raise FastsurfaceError(f"{_INSTALL} ({error})") from error
        self.loopback = is_loopback(host)
        app = build_app(problem, loopback=self.loopback)
        self._server: ExplorerServer = ExplorerServer(app, log_level="warning", access_log=False)
        self._thread: threading.Thread | None = None
        self._socket = _bind(host, port)
        self.host, self.port = host, int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        """The page's address; a wildcard host is shown as this machine's loopback."""
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}/"

    def serve(self) -> None:
        """Serve on this thread until Ctrl-C or ``close()``."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self) -> Explorer:
        """Serve on a background thread; return once the server answers."""
        self._thread = threading.Thread(target=self.serve, name="fastsurface-explore-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise FastsurfaceError(f"the explorer's server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def close(self) -> None:
        """Stop the server: the request being computed is finished and answered (work per
        request is bounded), queued ones are answered 503 at once."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._socket.close()

    def __enter__(self) -> Explorer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``."""
    if not isinstance(host, str) or not host:
        raise FastsurfaceError(f"`host` must be a host name or address, got {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise FastsurfaceError(f"`port` must be an integer in [0, 65535] (0: any free port), got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise FastsurfaceError(f"`port` {port} on `host` {host!r} cannot be used: {error.strerror or error}") from None


def _problem(
    model: nn.Module | None,
    data: object,
    plane: fs.Plane | None,
    train: object,
    loss: Any,
    window: tuple[tuple[float, float], tuple[float, float]] | None,
    step: float | None,
    device: Any,
    dtype: Any,
) -> Problem:
    """The problem to serve, with its starting settings checked like a page's request."""
    if model is None and data is None:
        for name, value in (("plane", plane), ("train", train)):
            if value is not None:
                raise FastsurfaceError(f"`{name}` needs `model` and `data`; the seed problem has its own")
        problem: Problem = SeedProblem(device=device, dtype=dtype)
    elif model is None or data is None:
        raise FastsurfaceError("`model` and `data` go together: pass both, or neither for the seed problem")
    else:
        plane = fs.default_plane(model) if plane is None else plane
        fs.evaluate_points(model, plane, data, np.zeros((1, 2)), loss=loss, device=device, dtype=dtype)  # fit check
        training = data if train is None else train
        problem = Problem(
            model, plane, lambda _: (training, data), loss=loss, device=device, dtype=dtype, defaults=MODEL_DEFAULTS
        )
    if window is not None:
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise FastsurfaceError(f"`window` must be ((w1_start, w1_stop), (w2_start, w2_stop)), got {window!r}")
        problem.defaults.update(w1=window[0], w2=window[1])
    if step is not None:
        problem.defaults["step"] = step
    settings.surface_request({}, problem.defaults, problem.seed_data)
    settings.path_request({"path": "first"}, problem.defaults, problem.seed_data)
    return problem
