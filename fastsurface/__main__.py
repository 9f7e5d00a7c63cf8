"""``python -m fastsurface`` and the ``fastsurface`` command.

Ctrl-C is one line and exit status 130 from the first instant: a handler set before the
command line and the numerical libraries are imported ends the process during start-up, and
the command line's own handling takes over once it runs.
"""

import signal
import sys
from typing import NoReturn

_INTERRUPTED = 130


def run() -> NoReturn:
    """Start the command line with ``sys.argv``; exits with its status."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    from fastsurface.cli import main

    if not {"-h", "--help"} & set(sys.argv[1:]) and len(sys.argv) > 1:
        # The seconds of importing torch and numpy, where an interrupt would leave them half
        # imported, end the process at once; every command but --help needs them.
        import numpy  # noqa: F401
        import torch  # noqa: F401
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())


def _interrupted_while_starting(_signum: int, _frame: object) -> NoReturn:
    print("fastsurface: interrupted; no output was written", file=sys.stderr)
    sys.exit(_INTERRUPTED)


if __name__ == "__main__":
    run()
