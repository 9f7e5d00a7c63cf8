"""Writing output files so that a reader never sees a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fastsurface.errors import FastsurfaceError


def check_writable(name: str, path: str | os.PathLike[str], suffixes: tuple[str, ...]) -> Path:
    """Refuse, before any work, an output path that cannot be written.

    Args:
        name: the argument's name, for the message.
        path: the output file.
        suffixes: allowed file name endings, e.g. ``(".html",)``.
    """
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise FastsurfaceError(f"`{name}` must end in {' or '.join(suffixes)}, got {str(path)!r}")
    folder = target.parent
    if not folder.is_dir():
        raise FastsurfaceError(f"`{name}` must be in an existing folder, got {str(path)!r}")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise FastsurfaceError(f"`{name}` is not writable: {str(path)!r}")
    if target.is_dir():
        raise FastsurfaceError(f"`{name}` is a folder, not a file: {str(path)!r}")
    return target


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A reader sees the old file or the whole new one, never a part: the rename is atomic
    on POSIX and Windows, and an error or interruption (``KeyboardInterrupt`` included)
    removes the temporary file.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the data reach the disk before the rename publishes them
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make the result private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
