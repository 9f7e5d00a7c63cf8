"""The exit statuses of the ``fastsurface`` command."""

from enum import IntEnum


class ExitCode(IntEnum):
    """What the command returns to the shell."""

    OK = 0
    # Bad input, refused by argparse or by the library (a FastsurfaceError): argparse's own status.
    ERROR = 2
    # Ctrl-C or SIGTERM: 128 + SIGINT, as a shell reports a process that SIGINT ended.
    INTERRUPTED = 130
