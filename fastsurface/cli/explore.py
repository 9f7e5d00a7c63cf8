"""``fastsurface explore``: the explorer's page for the seed problem, served until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from fastsurface.cli import _shared
from fastsurface.cli.exit_codes import ExitCode


def declare(parser: argparse.ArgumentParser) -> None:
    """Where to serve, and how to compute."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on; any but loopback prints a warning")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--no-browser", dest="open_browser", action="store_false", help="print the address, open no browser"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="compute dtype")


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Serve until Ctrl-C (or SIGTERM); exit status 130 then."""
    from fastsurface.explorer import explore  # the web stack, only for this command

    try:
        explore(
            device=arguments.device,
            dtype=arguments.dtype,
            host=arguments.host,
            port=arguments.port,
            open_browser=arguments.open_browser,
        )
    except KeyboardInterrupt:
        print("fastsurface: explorer stopped", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return ExitCode.OK


COMMAND = _shared.Command(
    name="explore",
    summary="a local web page to explore the seed problem: zoom, click to train, compare optimisers",
    description="Serve the explorer's page on this machine and open it in the browser: the seed problem's loss "
    "surface (3-D, contour or heatmap), recomputed when the window, step, data or reduction change or the plot is "
    "zoomed; training paths started by a click. The page never runs code sent to it. Ctrl-C stops the server.",
    declare=declare,
    handle=handle,
)
