"""One worker thread for the engine, where the latest request wins.

Engine calls run one at a time on a single thread: torch already spreads each call over
the cores, so two calls at once would only compete for them, and the caches of a
``Problem`` are never touched by two threads. Each request may carry a key (a client,
that is one open page, and a kind of work: the surface, one path) and a sequence
number. When a queued job reaches the worker after a newer request of the same key
has arrived, it is dropped unrun (``SupersededError``), so a burst of slider moves computes
its last value and no stale one in between. A job already running is not interrupted.

Stopping (``close``) lets the running job finish and answers every queued one at once
with ``StoppingError``. The thread is a ``ThreadPoolExecutor``'s, which the interpreter
joins before it exits, so torch is never torn down under a running computation (that
aborts the process).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Key = tuple[str, ...]
T = TypeVar("T")


class SupersededError(Exception):
    """A request dropped because a newer one of the same client and kind arrived."""


class StoppingError(Exception):
    """A request that arrived or waited while the explorer was stopping."""


class LatestWins:
    """A single worker thread with a queue that drops superseded jobs."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsurface-explore-engine")
        self._lock = threading.Lock()
        # Highest sequence number seen per key, kept while a job of that key waits or runs.
        self._latest: dict[Key, int] = {}
        self._open: Counter[Key] = Counter()
        self._closed = False

    async def run(self, key: Key | None, seq: int, work: Callable[[], T]) -> T:
        """``work()``'s result, computed on the worker thread.

        Args:
            key: the client and kind of work, or ``None`` for a job that is never dropped.
            seq: the request's number among its key's requests; numbers grow.
            work: the engine call.

        Raises:
            SupersededError: when a request of ``key`` with a higher ``seq`` arrived before
                this one started (or before this one arrived).
            StoppingError: when the worker was closed before this job started.
        """
        with self._lock:
            if self._closed:
                raise StoppingError("the explorer is stopping")
            if key is not None:
                if seq <= self._latest.get(key, -1):
                    raise SupersededError(f"request {seq} arrived after request {self._latest[key]} of the same kind")
                self._latest[key] = seq
                self._open[key] += 1
        future = self._executor.submit(self._unless_superseded, key, seq, work)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancelled() and self._closed:  # dropped from the queue by ``close``
                raise StoppingError("the explorer is stopping") from None
            raise
        finally:
            self._release(key)

    @property
    def keys_in_use(self) -> int:
        """Keys with a job waiting or running: the only state kept per client."""
        with self._lock:
            return len(self._latest)

    def close(self) -> None:
        """Let the running job finish; queued jobs raise ``StoppingError`` at once, and
        later ones as they arrive."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _unless_superseded(self, key: Key | None, seq: int, work: Callable[[], T]) -> T:
        """On the worker: ``work()``, unless a newer request of ``key`` arrived meanwhile."""
        with self._lock:
            closed, newer = self._closed, None if key is None else self._latest.get(key, seq)  # gone: request left
        if closed:
            raise StoppingError("the explorer is stopping")
        if newer is not None and newer > seq:
            raise SupersededError(f"request {seq} was superseded by request {newer}")
        return work()

    def _release(self, key: Key | None) -> None:
        """Forget a key once none of its jobs waits or runs (the table stays small)."""
        if key is None:
            return
        with self._lock:
            self._open[key] -= 1
            if self._open[key] == 0:
                del self._open[key], self._latest[key]
