"""``python -m fastsurface`` and the ``fastsurface`` command.

Ctrl-C is one line and exit status 130 from the first instant: a handler set before the
command line and the numerical libraries are imported ends the process during start-up, and
the command line's own handling takes over once it runs.
"""

import os
import signal
import sys
from typing import NoReturn

_INTERRUPTED = 130


def run() -> NoReturn:
    """Start the command line with ``sys.argv``; exits with its status."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    # torch's own switch (read at its first large allocation): blocks of 2 MB or more on
    # transparent huge pages, so a tile's temporaries of megabytes are faulted in a huge
    # page at a time, not 4 KB at a time. This process's, not a library's, to decide; a
    # value the user set is kept.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
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
