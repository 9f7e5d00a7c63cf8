"""The ``fastsurface`` command line: ``run`` draws the seed article's figure, ``surface`` computes a
resumable surface, ``show`` prints a saved file, ``bench`` times every method.

Each command is declared as data (``Command``) in its own module, with its flags and its handler;
this module assembles them into one parser and runs the chosen handler.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from fastsurface.cli import basins, bench, explore, run, show, surface
from fastsurface.cli._shared import Parser, as_flags
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError

# The subcommands, in their order in `fastsurface --help`.
COMMANDS = (run.COMMAND, surface.COMMAND, basins.COMMAND, show.COMMAND, bench.COMMAND, explore.COMMAND)
# The status when the reader of the output closed it early (`fastsurface show FILE | head -1`), as
# Python's own: the report was cut short, and what the command had left to do after it was not done.
_OUTPUT_CLOSED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsurface`` command; returns the exit status."""
    arguments = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    try:
        status = arguments.handler(arguments)  # heavy imports happen here, so Ctrl-C meets the handler
        sys.stdout.flush()  # a reader gone meets this flush, not the one at exit
        return status
    except BrokenPipeError:
        _discard_output()
        return _OUTPUT_CLOSED
    except FastsurfaceError as error:
        print(f"fastsurface: error: {as_flags(str(error), arguments)}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        kept = " (finished checkpoint blocks are kept: run the same command to resume)"
        print(
            f"fastsurface: interrupted; no output was written{kept if _uses_checkpoints(arguments) else ''}",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _discard_output() -> None:
    """Point stdout at the null device once its reader has gone, so that Python's flush at exit
    does not fail again with a traceback (the recipe of Python's documentation on SIGPIPE):
    every command's report ends quietly, as command-line tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _uses_checkpoints(arguments: argparse.Namespace) -> bool:
    return getattr(arguments, "checkpoint_dir", None) is not None


def _parser() -> Parser:
    parser = Parser(prog="fastsurface", description="Fast loss surfaces of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        subparser = commands.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            formatter_class=command.formatter_class,
        )
        for add_flags in (*command.flag_groups, command.declare):
            add_flags(subparser)
        subparser.set_defaults(handler=command.handle)
    return parser
