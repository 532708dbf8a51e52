"""What a running attempt sees: ``RunContext``, and ``current_task()`` for code inside a task."""
from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import TaskCancelled

if TYPE_CHECKING:
    from .task import Task

_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "ttasks_current", default=None
)


class RunContext:
    """One attempt of one task: where output and progress go, and whether to stop.

    Code inside a Python task gets it from ``current_task()``: check
    ``cancelled`` (or call ``check()``) in long loops, ``sleep()`` instead of
    ``time.sleep`` to wake on cancel, report ``progress(percent, message)``.
    """

    def __init__(
        self,
        task: Task,
        attempt: int,
        on_output: Callable[[RunContext, str, str], None],
        on_progress: Callable[[RunContext, float | None, str | None], None],
    ) -> None:
        self.task = task
        self.attempt = attempt
        self._on_output = on_output
        self._on_progress = on_progress
        self._cancel = threading.Event()
        #: set by the runner: whatever it needs to stop this attempt (process, loop, thread id)
        self.handle: Any = None
        self.lock = threading.Lock()
        # engine bookkeeping for this attempt
        self.timeout_timer: Any = None
        self.timed_out = False
        self.last_activity = 0.0
        self.ready_carry = ""
        self.service_freed = False
        #: session id of the attempt's process tree, for commands
        self.sid: int | None = None
        #: True when the attempt runs in a worker process (it can be killed for real)
        self.process = False

    @property
    def cancelled(self) -> bool:
        """True once this attempt must stop (cancel, timeout, shutdown)."""
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise ``TaskCancelled`` if this attempt must stop."""
        if self._cancel.is_set():
            raise TaskCancelled(f"task {self.task.label} was cancelled")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with ``TaskCancelled``) if the attempt is cancelled."""
        if self._cancel.wait(seconds):
            self.check()

    def progress(self, percent: float | None = None, message: str | None = None) -> None:
        """Report progress (0-100) and an optional short message."""
        self._on_progress(self, percent, message)

    def output(self, stream: str, text: str) -> None:
        """Add text to the task's ``stream`` ('stdout' or 'stderr')."""
        self._on_output(self, stream, text)

    def mark_cancelled(self) -> None:
        """Called by the executor: ask the attempt to stop."""
        self._cancel.set()

    def wait_cancelled(self, timeout: float | None) -> bool:
        """Block until cancelled or ``timeout``; True if cancelled."""
        return self._cancel.wait(timeout)

    def activate(self) -> contextvars.Token[RunContext | None]:
        """Make this the current task's context on this thread."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[RunContext | None]) -> None:
        _current.reset(token)


def current_task() -> RunContext | None:
    """The context of the task running this code, or None outside a task."""
    return _current.get()


def progress(percent: float | None = None, message: str | None = None) -> None:
    """Report progress from inside a task; does nothing outside one."""
    ctx = _current.get()
    if ctx is not None:
        ctx.progress(percent, message)
