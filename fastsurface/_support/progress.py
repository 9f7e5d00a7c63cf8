"""Progress bars with a total and a time estimate, for surfaces, paths and Hessians.

A bar is shown only when the caller asks (``progress=True``); library calls print nothing
otherwise, and ``tqdm`` is then not even imported. Where the total is known up front the
bar shows a time estimate, and once the first unit of work is done a run estimated to take
longer than ``LONG_SECONDS`` says so on one line, before the rest of the work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sized
from types import TracebackType
from typing import Any

# A run estimated to take longer than this (seconds) says so once its first unit is done.
LONG_SECONDS = 30.0


class Progress:
    """A progress bar on stderr, or nothing when ``enabled`` is false.

    Args:
        description: the bar's label (``"surface"``, ``"training"``, ``"hessian"``).
        unit: what one update counts (``"tile"``, ``"step"``, ``"Hv"``).
        enabled: show the bar; otherwise every method does nothing.
        total: units in the whole run, when known; ``plan`` may set it later.
        skip: units at the start left out of the estimate (a compiled kernel's first
            tile includes its compilation).
    """

    def __init__(self, description: str, unit: str, enabled: bool, total: int | None = None, skip: int = 0) -> None:
        self.description, self.unit, self.enabled, self.skip = description, unit, enabled, skip
        self.total: int | None = None
        self.exact = True
        self.done = 0
        self.started = time.perf_counter()
        self.estimated = False
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm  # only for a bar: importing it costs tens of milliseconds

            self.bar = tqdm(desc=description, unit=unit, total=total, leave=False)
        self.plan(total)

    def plan(self, total: int | None, *, exact: bool = True, skip: int | None = None) -> None:
        """Set the run's total units (``exact=False``: an estimate, dropped if the run passes it)."""
        self.total, self.exact = total, exact
        self.started = time.perf_counter()  # the estimate times the work after the plan
        if skip is not None:
            self.skip = skip
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, units: int = 1) -> None:
        """Count ``units`` more done; after the first counted ones, announce a long run."""
        self.done += units
        if self.bar is None:
            return
        if self.total is not None and self.done > self.total:  # an estimated total was too low
            self.plan(None)
        self.bar.update(units)
        if self.done == self.skip:
            self.started = time.perf_counter()
        elif self.done > self.skip and not self.estimated:
            self.estimated = True
            seconds = (time.perf_counter() - self.started) / (self.done - self.skip) * self._left()
            if self.total is not None and seconds > LONG_SECONDS:
                self.bar.write(long_run_line(self.description, self.total, self.unit, seconds, self.exact))

    def _left(self) -> int:
        return 0 if self.total is None else self.total - self.skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def long_run_line(description: str, total: int, unit: str, seconds: float, exact: bool = True) -> str:
    """The line that announces a long run: ``surface: about 4.2 min for 1,200 tiles (...)``."""
    about = (
        f"{seconds / 3600:.1f} h"
        if seconds >= 5400
        else f"{seconds / 60:.1f} min"
        if seconds >= 90
        else f"{seconds:.0f} s"
    )
    count = f"{total:,} {unit}s" if exact else f"about {total:,} {unit}s"
    return f"{description}: about {about} for {count} (estimated from the first)"


def tile_total(data: Any, pair: bool, first_chunk_samples: int, tiles_per_chunk: int) -> tuple[int | None, bool]:
    """Tiles of a whole surface, from its first chunk, and whether the count is exact.

    For an ``(x, y)`` pair (``pair``) every chunk but the last holds as many samples as
    the first, so the count is exact. For a sized iterable of batches (a ``DataLoader``, a
    list) it assumes one chunk per batch (a batch larger than a chunk adds more); for
    other iterables it is unknown.
    """
    if pair:
        return math.ceil(len(data[0]) / first_chunk_samples) * tiles_per_chunk, True
    if isinstance(data, Sized):
        return len(data) * tiles_per_chunk, False
    return None, False


def step_total(train: Any, pair: bool, batch_size: int, epochs: int) -> int | None:
    """Optimiser steps of ``epochs`` over ``train`` (``pair``: an ``(x, y)`` pair cut into
    batches of ``batch_size``; else an iterable of batches), ``None`` where unknown."""
    if pair:
        return math.ceil(len(train[0]) / batch_size) * epochs
    if isinstance(train, Sized):
        return len(train) * epochs
    return None
