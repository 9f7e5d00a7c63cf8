"""One worker thread for the engine, where the latest request wins.

Engine calls run one at a time on a single thread: torch already spreads each call over
the cores, so two calls at once would only compete for them, and the caches of a
``Problem`` are never touched by two threads. Each request may carry a key (a client,
that is one open page, and a kind of work: the surface, one path) and a sequence
number. When a queued job reaches the worker after a newer request of the same key
has arrived, it is dropped unrun (``SupersededError``), so a burst of slider moves computes
its last value and no stale one in between. A job already running is not interrupted.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Key = tuple[str, ...]
T = TypeVar("T")


class SupersededError(Exception):
    """A request dropped because a newer one of the same client and kind arrived."""


@dataclass(frozen=True)
class _Job(Generic[T]):
    key: Key | None
    seq: int
    work: Callable[[], T]
    future: Future[T]


class LatestWins:
    """A single daemon worker thread with a queue that drops superseded jobs."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Highest sequence number seen per key, kept while a job of that key waits or runs.
        self._latest: dict[Key, int] = {}
        self._open: Counter[Key] = Counter()
        self._thread = threading.Thread(target=self._serve, name="fastsurface-explore-engine", daemon=True)
        self._thread.start()

    async def run(self, key: Key | None, seq: int, work: Callable[[], T]) -> T:
        """``work()``'s result, computed on the worker thread.

        Args:
            key: the client and kind of work, or ``None`` for a job that is never dropped.
            seq: the request's number among its key's requests; numbers grow.
            work: the engine call.

        Raises:
            SupersededError: when a request of ``key`` with a higher ``seq`` arrived before
                this one started (or before this one arrived).
        """
        with self._lock:
            if key is not None:
                if seq <= self._latest.get(key, -1):
                    raise SupersededError(f"request {seq} arrived after request {self._latest[key]} of the same kind")
                self._latest[key] = seq
                self._open[key] += 1
        future: Future[T] = Future()
        self._queue.put(_Job(key, seq, work, future))
        try:
            return await asyncio.wrap_future(future)
        finally:
            self._release(key)

    @property
    def keys_in_use(self) -> int:
        """Keys with a job waiting or running: the only state kept per client."""
        with self._lock:
            return len(self._latest)

    def close(self) -> None:
        """Stop the worker once the jobs queued before this call are done."""
        self._queue.put(None)

    def _release(self, key: Key | None) -> None:
        """Forget a key once none of its jobs waits or runs (the table stays small)."""
        if key is None:
            return
        with self._lock:
            self._open[key] -= 1
            if self._open[key] == 0:
                del self._open[key], self._latest[key]

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            if not job.future.set_running_or_notify_cancel():  # its request went away
                continue
            with self._lock:
                newer = None if job.key is None else self._latest[job.key]
            if newer is not None and newer > job.seq:
                job.future.set_exception(SupersededError(f"request {job.seq} was superseded by request {newer}"))
                continue
            try:
                job.future.set_result(job.work())
            except Exception as error:  # handed to the request, which reports it
                job.future.set_exception(error)
