"""One thread that runs delayed calls: timeouts, stall checks, kill deadlines, retry backoff.

``schedule`` costs O(log n); cancelled entries are skipped when they come up.

The thread is what ends cancelled process trees, so nothing may stop it: a
delay that is not a finite number of seconds up to ``MAX_DELAY`` is refused
at the call (``SpecError``), a callback that raises anything at all is logged
and the next one runs, and should the thread end anyway, the next
``schedule`` starts a new one that runs what is pending.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable

from .errors import SpecError

log = logging.getLogger("ttasks_ipy")

#: the longest delay accepted: 10 years (``threading`` itself cannot wait beyond ~292 years)
MAX_DELAY = 10 * 365.25 * 86400.0
#: the thread never waits longer than this in one go, whatever the heap holds
_MAX_WAIT = 3600.0


def check_delay(delay: object, what: str = "delay") -> float:
    """``delay`` as seconds (negative counts as 0); ``SpecError`` naming ``what`` if it is no usable number.

    Accepted: an int or float that is finite and at most ``MAX_DELAY``.
    """
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise SpecError(f"{what} must be a number of seconds, not {delay!r}")
    try:
        seconds = float(delay)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds > MAX_DELAY:
        raise SpecError(f"{what} must be a finite number of seconds up to {MAX_DELAY:.0f} (10 years), not {delay!r}")
    return max(seconds, 0.0)


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
        self._failures = 0

    def schedule(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` in ``delay`` seconds on the timer thread.

        Raises ``SpecError`` if ``delay`` is not a finite number of seconds up
        to ``MAX_DELAY`` (a negative one means now).
        """
        t = Timer(time.monotonic() + check_delay(delay), fn)
        with self._cond:
            if self._closed:
                t.cancelled = True
                return t
            heapq.heappush(self._heap, (t.when, next(self._count), t))
            if self._thread is None or not self._thread.is_alive():
                if self._thread is not None:
                    log.error("the timer thread %s had ended; started a new one", self._name)
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return t

    @property
    def failures(self) -> int:
        """How many callbacks raised so far (each was logged)."""
        return self._failures

    def alive(self) -> bool:
        """Whether the timer thread is running (it starts on the first ``schedule``)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _next(self) -> Timer | None:
        """The next due timer, waiting for it; None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    return heapq.heappop(self._heap)[2]
                wait = min(self._heap[0][0] - now, _MAX_WAIT) if self._heap else None
                self._cond.wait(wait)

    def _loop(self) -> None:
        while True:
            try:
                t = self._next()
            except BaseException:  # noqa: BLE001 - a stray asynchronous exception: keep serving
                log.exception("the timer thread %s was interrupted; it goes on", self._name)
                continue
            if t is None:
                return
            if t.cancelled:
                continue
            try:
                t.fn()
            except BaseException:  # noqa: BLE001 - SystemExit here would end only this thread: log it too
                self._failures += 1
                log.exception("timer callback %r failed", t.fn)

    def close(self) -> None:
        """Stop the thread; pending calls are dropped."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
