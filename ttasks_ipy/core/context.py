"""What code inside a task sees: ``TaskContext``, and ``current_task()`` / ``progress()`` for the task's own code.

A ``TaskContext`` is made by the backend where the attempt runs (a thread of
this process, a worker process, a cluster worker) and knows nothing of the
engine: it forwards output and progress to the backend's channel
(``JobEvents``) and says whether the attempt must stop. How an attempt is
stopped is registered on it per blocking point (``on_cancel(abort)``), as trio
registers an abort function: a command registers "end my process tree", a
prompt "cancel my request", a Python body "raise in my thread". A cancel that
comes before the registration runs the abort at once, so there is no window in
which an attempt is started but cannot be stopped.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import TaskCancelled

if TYPE_CHECKING:
    from .backends.base import JobEvents
    from .output import TaskOutput

log = logging.getLogger("ttasks_ipy")

_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("ttasks_current", default=None)

Abort = Callable[[], None]


class TaskContext:
    """One attempt of one task, as its code sees it.

    Code inside a Python task gets it from ``current_task()``: check
    ``cancelled`` (or call ``check()``) in long loops, ``sleep()`` instead of
    ``time.sleep`` to wake on cancel, report ``progress(percent, message)``.
    Runners use ``output(stream, text)`` and ``on_cancel(abort)``.
    """

    def __init__(
        self,
        label: str,
        attempt: int,
        events: JobEvents,
        *,
        task_id: int | None = None,
        store: TaskOutput | None = None,
        services: Any = None,
    ) -> None:
        #: the task's name, or ``#id``
        self.label = label
        #: 1 for the first attempt, 2 for the first retry, ...
        self.attempt = attempt
        #: the task's id in the kernel (None where it is not known)
        self.task_id = task_id
        #: the task's local output store, when the attempt runs in the kernel's process (else None)
        self.store = store
        #: what the backend lends runners where it runs: ``timers``, ``reaper``, ``grace`` (may be None)
        self.services = services
        self._events = events
        self._cancelled = False
        self._wakeup: threading.Event | None = None  # made for the first sleep()/wait_cancelled()
        self._lock = threading.Lock()
        self._aborts: list[Abort] = []
        #: set by a runner that starts a process: its pid (the session leader), for lists and views
        self.pid: int | None = None

    # ---- for the task's code ------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once this attempt must stop (cancel, timeout, shutdown)."""
        return self._cancelled

    def check(self) -> None:
        """Raise ``TaskCancelled`` if this attempt must stop."""
        if self._cancelled:
            raise TaskCancelled(f"task {self.label} was cancelled")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with ``TaskCancelled``) if the attempt is cancelled."""
        if self.wait_cancelled(seconds):
            self.check()

    def wait_cancelled(self, timeout: float | None) -> bool:
        """Block until cancelled or ``timeout``; True if cancelled."""
        with self._lock:
            if self._cancelled:
                return True
            if self._wakeup is None:
                self._wakeup = threading.Event()
            wakeup = self._wakeup
        return wakeup.wait(timeout)

    def progress(self, percent: float | None = None, message: str | None = None) -> None:
        """Report progress (0-100) and an optional short message."""
        self._events.progress(percent, message)

    def output(self, stream: str, text: str) -> None:
        """Add text to the task's ``stream`` ('stdout' or 'stderr')."""
        self._events.output(stream, text)

    # ---- for runners ---------------------------------------------------
    def placed(self, pid: int | None, where: str | None = None) -> None:
        """Say that the attempt now runs in process ``pid`` (``where`` describes it; default ``pid N``)."""
        self.pid = pid
        self._events.placed(where or (f"pid {pid}" if pid is not None else None), pid)

    def on_cancel(self, abort: Abort) -> Callable[[], None]:
        """Call ``abort()`` (from the cancelling thread; it must return at once) when this attempt is cancelled.

        Runs it at once if the attempt is already cancelled. Returns the function
        that takes the registration back (call it when the blocking point is over).
        """
        with self._lock:
            if not self._cancelled:
                self._aborts.append(abort)
                return lambda: self._forget(abort)
        _call(abort)
        return _nothing

    def _forget(self, abort: Abort) -> None:
        with self._lock:
            try:
                self._aborts.remove(abort)
            except ValueError:
                pass

    # ---- for the backend -----------------------------------------------
    def cancel(self) -> None:
        """Mark the attempt cancelled and run every registered abort (once); returns at once."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            aborts, self._aborts = self._aborts, []
            wakeup = self._wakeup
        if wakeup is not None:
            wakeup.set()
        for abort in aborts:
            _call(abort)

    def activate(self) -> contextvars.Token[TaskContext | None]:
        """Make this the current task's context on this thread."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[TaskContext | None]) -> None:
        """Undo ``activate``."""
        _current.reset(token)


def _call(abort: Abort) -> None:
    try:
        abort()
    except Exception:
        log.exception("stopping a task failed")


def _nothing() -> None:
    return None


def current_task() -> TaskContext | None:
    """The context of the task running this code, or None outside a task."""
    return _current.get()


def progress(percent: float | None = None, message: str | None = None) -> None:
    """Report progress from inside a task; does nothing outside one."""
    ctx = _current.get()
    if ctx is not None:
        ctx.progress(percent, message)
