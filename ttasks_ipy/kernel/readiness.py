"""Waiting for services to be ready: ``%bg --wait web`` on a ``--service --ready`` task.

A service runs until it is cancelled, so waiting for its end would only run
out the timeout. For a service started with ``--ready PATTERN`` the wait that
names it ends when an output line matched the pattern, or when the service
ended first (failed, say).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ..core import EventKind, Executor, Task, TaskEvent, WaitTimeout


def awaits_ready(task: object) -> bool:
    """Whether a wait that names ``task`` waits for it to be ready rather than to end."""
    spec = getattr(task, "spec", None)
    return isinstance(task, Task) and bool(spec.service) and spec.ready_pattern is not None and not task.done()


def is_ready(task: Task) -> bool:
    """Whether the service said it is ready (an output line matched its ``--ready`` pattern)."""
    return task.ready_line is not None


def wait_ready(executor: Executor, services: Sequence[Task], timeout: float | None) -> None:
    """Block until each of ``services`` is ready or has ended, at most ``timeout`` seconds.

    Raises ``WaitTimeout`` naming the ones not ready yet. ``KeyboardInterrupt``
    stops the wait, not the services.
    """
    services = list(services)
    changed = threading.Event()

    def settled() -> bool:
        return all(is_ready(t) or t.done() for t in services)

    def on_ready(ev: TaskEvent) -> None:
        if ev.task in services:
            changed.set()

    unsubscribe = executor.bus.subscribe(on_ready, [EventKind.READY])
    try:
        for t in services:
            t.add_done_callback(lambda _t: changed.set())
        end = None if timeout is None else time.monotonic() + timeout
        while not settled():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                names = ", ".join(t.label for t in services if not (is_ready(t) or t.done()))
                raise WaitTimeout(f"waited {timeout:g}s; not ready yet: {names}")
            changed.wait(0.25 if left is None else min(left, 0.25))  # bounded slices: Interrupt runs promptly
            changed.clear()
    finally:
        unsubscribe()


__all__ = ["awaits_ready", "is_ready", "wait_ready"]
