"""Writing output files so that a reader never sees a half-written one.

A file is written as a temporary beside it, ``.<name>.fastsurface-<pid>-<random>.tmp``, and
renamed over it when complete. A process killed outright (SIGKILL, power loss) cannot
remove its temporary; the next write into the same folder removes every such temporary
whose process has ended and that is older than the writing process. An output path that is a
symbolic link is written through: the link stays and its target is replaced.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from fastsurface.errors import FastsurfaceError

_TEMPORARY = re.compile(r"^\..+\.fastsurface-(\d+)-[^.]+\.tmp$")
# Longest random part mkstemp adds, plus our prefix and suffix around the file's name.
_TEMPORARY_EXTRA = len(".") + len(".fastsurface-") + 10 + len("-") + 16 + len(".tmp")
# Temporaries older than this process that belong to no running process are stale.
_STARTED = time.time()


def check_writable(name: str, path: str | os.PathLike[str], suffixes: tuple[str, ...]) -> Path:
    """Refuse, before any work, an output path that cannot be written.

    Args:
        name: the argument's name, for the message.
        path: the output file.
        suffixes: allowed file name endings, e.g. ``(".html",)``.
    """
    target = checked_path(name, path)
    if target.suffix.lower() not in suffixes:
        raise FastsurfaceError(f"`{name}` must end in {' or '.join(suffixes)}, got {str(path)!r}")
    with os_errors_refused(name, path):
        folder = target.parent
        if not folder.is_dir():
            raise FastsurfaceError(f"`{name}` must be in an existing folder, got {str(path)!r}")
        _check_name_length(name, target)  # before a look at the file itself, which so long a name would fail
        if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
            raise FastsurfaceError(f"`{name}` is not writable: {str(path)!r}")
        if target.is_dir():
            raise FastsurfaceError(f"`{name}` is a folder, not a file: {str(path)!r}")
        _check_name_length(name, _destination(target))  # a symbolic link's target is what gets a temporary
    return target


def check_readable(name: str, path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an input path that names no existing file, or that the
    operating system cannot take as a name (``checked_path``, ``os_errors_refused``)."""
    source = checked_path(name, path)
    with os_errors_refused(name, path):
        if not source.is_file():
            raise FastsurfaceError(f"`{name}` must be an existing file, got {str(path)!r}")
    return source


def checked_path(name: str, path: object) -> Path:
    """``path`` as a ``Path``, refused unless the operating system could take it as a name:
    a string (or path-like), not empty, without a NUL byte, in UTF-8. Bytes that are not
    UTF-8 (on the command line, Python hands them over as lone surrogates) are refused
    rather than passed on: every message and report would fail to print such a name."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise FastsurfaceError(f"`{name}` must be a path (str or path-like), got {type(path).__name__}")
    if text == "":
        raise FastsurfaceError(f"`{name}` must be a path, got an empty string")
    if "\0" in text:
        raise FastsurfaceError(f"`{name}` must not contain a NUL byte, got {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise FastsurfaceError(f"`{name}` must be a name in UTF-8, got {text!r}, which holds other bytes") from error
    return Path(text)


@contextlib.contextmanager
def os_errors_refused(name: str, path: object) -> Iterator[None]:
    """An operating-system error while looking at ``path`` (a name or path too long for the
    file system, a loop of symbolic links, a folder without permission to look in) as a
    ``FastsurfaceError`` naming the argument, not a traceback."""
    try:
        yield
    except OSError as error:
        raise FastsurfaceError(f"`{name}` cannot be used: {error.strerror or error}: {str(path)!r}") from error


def _check_name_length(name: str, target: Path) -> None:
    """Refuse a file name too long for its temporary (``atomic_write``) in its folder."""
    longest = _name_max(target.parent)
    if len(target.name.encode()) + _TEMPORARY_EXTRA > longest:
        raise FastsurfaceError(
            f"`{name}` is too long a file name: {len(target.name.encode())} bytes, and its temporary while writing "
            f"needs {_TEMPORARY_EXTRA} more within this folder's limit of {longest}; use a shorter name"
        )


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


# Inside ``all_or_nothing``: the written temporary files and their destinations.
_staged: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("staged", default=None)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A reader sees the old file or the whole new one, never a part: the rename is atomic
    on POSIX and Windows, and an error or interruption (``KeyboardInterrupt`` included)
    removes the temporary file. Inside ``all_or_nothing`` the rename waits for the block's
    end. An operating-system error is a ``FastsurfaceError`` naming the file.
    """
    path = _destination(path)
    remove_stale_temporaries(path.parent)
    try:
        handle, name = tempfile.mkstemp(
            prefix=f".{path.name}.fastsurface-{os.getpid()}-", suffix=".tmp", dir=path.parent
        )
    except OSError as error:
        raise FastsurfaceError(f"cannot write {str(path)!r}: {error.strerror or error}") from error
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the data reach the disk before the rename publishes them
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make the result private
        staged = _staged.get()
        if staged is None:
            _publish(temporary, path)
        else:
            staged.append((temporary, path))
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise FastsurfaceError(f"cannot write {str(path)!r}: {error.strerror or error}") from error
        raise


@contextlib.contextmanager
def all_or_nothing() -> Iterator[list[Path]]:
    """Write several outputs together: ``atomic_write`` calls inside the block leave their
    files as temporaries, renamed into place when the block ends without an error, with
    SIGINT and SIGTERM held back meanwhile; on an error or interruption before that they are
    removed and no output changes. Yields the list of published paths, filled at the end.
    Inside another such block, files wait for the outer one."""
    if _staged.get() is not None:
        yield []
        return
    staged: list[tuple[Path, Path]] = []
    published: list[Path] = []
    token = _staged.set(staged)
    try:
        yield published
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    finally:
        _staged.reset(token)
    with _signals_held():
        for index, (temporary, path) in enumerate(staged):
            try:
                _publish(temporary, path)
            except BaseException:
                for left, _ in staged[index:]:
                    left.unlink(missing_ok=True)
                raise
            published.append(path)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (POSIX, main thread), so that an
    interrupt cannot split it; they are delivered right after."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _publish(temporary: Path, path: Path) -> None:
    try:
        os.replace(temporary, path)
    except OSError as error:
        raise FastsurfaceError(f"cannot write {str(path)!r}: {error.strerror or error}") from error


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete this package's temporaries in ``folder`` left by processes that have ended
    (killed before they could clean up) and older than this process; returns them."""
    removed: list[Path] = []
    try:
        candidates = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in candidates:
        match = _TEMPORARY.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < _STARTED:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # another process removed it first, or it is not ours to remove
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or not a pid: leave the file alone
    return True


def _destination(path: Path) -> Path:
    """Where writing ``path`` lands: a symbolic link's target (the link stays), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
