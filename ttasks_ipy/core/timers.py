"""One thread that runs delayed calls: timeouts, stall checks, kill deadlines, retry backoff.

``schedule`` costs O(log n); cancelled entries are skipped when they come up.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("ttasks_ipy")


class Timer:
    """A scheduled call; ``cancel()`` stops it if it has not run."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Runs callables after a delay on one daemon thread, started on first use."""

    def __init__(self, name: str = "ttasks-timers") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Timer]] = []
        self._count = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` in ``delay`` seconds on the timer thread."""
        t = Timer(time.monotonic() + max(delay, 0.0), fn)
        with self._cond:
            if self._closed:
                t.cancelled = True
                return t
            heapq.heappush(self._heap, (t.when, next(self._count), t))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return t

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, t = heapq.heappop(self._heap)
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            if t.cancelled:
                continue
            try:
                t.fn()
            except Exception:
                log.exception("timer callback %r failed", t.fn)

    def close(self) -> None:
        """Stop the thread; pending calls are dropped."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
