"""Small test helpers shared by test modules (no fixtures here)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ttasks_ipy.core import EventKind, Executor, TaskEvent
from ttasks_ipy.core.procs import session_members


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` until true, at most ``timeout`` seconds (for things no event announces)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        time.sleep(0.02)


def no_process_left(sid: int, timeout: float) -> None:
    """The process tree of session ``sid`` is gone within ``timeout`` seconds."""
    wait_until(lambda: not session_members(sid), timeout, f"session {sid} empty (left: {session_members(sid)})")


class Recorder:
    """Collects events from an executor's bus; ``wait_for`` blocks on a matching event."""

    def __init__(self, ex: Executor) -> None:
        self.events: list[TaskEvent] = []
        self._cond = threading.Condition()
        ex.bus.subscribe(self._on)

    def _on(self, ev: TaskEvent) -> None:
        with self._cond:
            self.events.append(ev)
            self._cond.notify_all()

    def kinds(self, task=None) -> list[str]:
        return [e.kind.value for e in self.events if task is None or e.task is task]

    def wait_for(self, kind: EventKind, task=None, timeout: float = 10) -> TaskEvent:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.kind is kind and (task is None or e.task is task):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} event in {timeout}s; saw {self.kinds(task)}")
                self._cond.wait(left)
