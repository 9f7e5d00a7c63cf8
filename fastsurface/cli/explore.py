"""``fastsurface explore``: the explorer's page for the seed problem, served until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

from fastsurface.explorer import explore

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register the ``explore`` command."""
    command = commands.add_parser(
        "explore",
        help="a local web page to explore the seed problem: zoom, click to train, compare optimisers",
        description="Serve the explorer's page on this machine and open it in the browser: the seed problem's "
        "loss surface (3-D, contour or heatmap), recomputed when the window, step, data or reduction change or the "
        "plot is zoomed; training paths started by a click. Ctrl-C stops the server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    command.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on; any but loopback prints a warning"
    )
    command.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    command.add_argument(
        "--no-browser", dest="open_browser", action="store_false", help="print the address, open no browser"
    )
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    command.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="compute dtype")
    command.set_defaults(handler=run)


def run(arguments: argparse.Namespace) -> int:
    """Serve until Ctrl-C (or SIGTERM); exit status 130 then."""
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
        return 130
    return 0
