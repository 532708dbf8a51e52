"""``Task``: one unit of work, its state machine, and the handle a user keeps.

Every state change goes through ``_change`` under the task's lock and returns
the event to publish; the caller publishes after releasing the lock. Whoever
wins a race (finish, cancel, timeout) makes the one terminal change; the
loser's change is refused quietly.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .context import current_task
from .errors import (
    InvalidTransition,
    TaskCancelled,
    TaskFailed,
    TaskNotDone,
    WaitInsideTask,
    WaitTimeout,
)
from .events import EventKind, TaskEvent
from .output import TaskOutput
from .spec import TaskSpec
from .states import TaskState, can_change

if TYPE_CHECKING:
    from .executor import Executor

_EVENT_FOR_STATE = {
    TaskState.PENDING: EventKind.PENDING,
    TaskState.QUEUED: EventKind.QUEUED,
    TaskState.RUNNING: EventKind.STARTED,
    TaskState.SUCCEEDED: EventKind.SUCCEEDED,
    TaskState.FAILED: EventKind.FAILED,
    TaskState.CANCELLED: EventKind.CANCELLED,
    TaskState.BLOCKED: EventKind.BLOCKED,
}


class Task:
    """A background task and its handle.

    Read ``status``, ``output``, ``error``, ``result``; call ``wait(timeout)``,
    ``cancel()``, ``done()``. Created by ``Executor.submit``.
    """

    def __init__(self, executor: Executor, task_id: int, spec: TaskSpec, output: TaskOutput) -> None:
        self.id = task_id
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self._executor = executor
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._callbacks: list[Callable[[Task], None]] = []
        self.state = TaskState.PENDING
        self.output_buffer = output
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.attempt = 0
        #: the value of the last attempt (a command's result even when it failed)
        self.value: Any = None
        self.has_value = False
        #: the exception that failed the task, if any
        self.exception: BaseException | None = None
        #: the traceback text of that exception, for logs
        self.traceback: str | None = None
        #: why the task ended the way it did ('exit status 2', 'timed out after 5s', ...)
        self.reason: str | None = None
        self.progress: tuple[float | None, str | None] = (None, None)
        self.stalled = False
        self.ready_line: str | None = None
        #: names of tasks that kept this one from running (graphs)
        self.blocked_by: list[str] = []
        #: rich outputs the task displayed (mime bundles: {'text/plain': ..., 'image/png': ...}), capped
        self.displays: list[dict[str, Any]] = []
        #: pid of the attempt's process (session leader), for commands and worker processes
        self.pid: int | None = None

    # ---- reading -------------------------------------------------------
    @property
    def label(self) -> str:
        """``name`` if it has one, else ``#id``."""
        return self.name or f"#{self.id}"

    @property
    def status(self) -> str:
        """The state as a word, with ``stalled`` when a running task went quiet."""
        s = self.state.value
        return "stalled" if (self.stalled and self.state is TaskState.RUNNING) else s

    def done(self) -> bool:
        """True once the task is in a terminal state."""
        return self.state.terminal

    @property
    def ok(self) -> bool:
        """True if the task succeeded."""
        return self.state is TaskState.SUCCEEDED

    @property
    def elapsed(self) -> float:
        """Seconds since it started (its duration once finished; 0 if it never started)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def result(self) -> Any:
        """The task's value.

        Raises ``TaskNotDone`` while it runs, ``TaskCancelled`` or ``TaskFailed``
        when it ended without a value.
        """
        state = self.state
        if not state.terminal:
            raise TaskNotDone(f"task {self.label} is {self.status}: wait for it first (h.wait(timeout))")
        if self.has_value:
            return self.value
        if state is TaskState.CANCELLED:
            raise TaskCancelled(f"task {self.label} was cancelled ({self.reason})")
        if state is TaskState.BLOCKED:
            raise TaskFailed(f"task {self.label} never ran: blocked by {', '.join(self.blocked_by)}", self)
        raise TaskFailed(f"task {self.label} failed: {self.error}", self) from self.exception

    @property
    def error(self) -> str | None:
        """The failure in one line, or None."""
        if self.exception is not None:
            return f"{type(self.exception).__name__}: {self.exception}"
        if self.state in (TaskState.FAILED, TaskState.CANCELLED, TaskState.BLOCKED):
            return self.reason
        return None

    @property
    def output(self) -> str:
        """The task's stdout (the whole of it as kept)."""
        return self.output_buffer.read("stdout")

    @property
    def stderr(self) -> str:
        """The task's stderr (the whole of it as kept)."""
        return self.output_buffer.read("stderr")

    # ---- acting --------------------------------------------------------
    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel the task; returns at once. False if it had already finished."""
        return self._executor.cancel(self, reason)

    def wait(self, timeout: float | None = None) -> Task:
        """Block until the task is done, at most ``timeout`` seconds (``WaitTimeout`` then)."""
        self._executor.wait([self], timeout=timeout)
        return self

    def add_done_callback(self, fn: Callable[[Task], None]) -> None:
        """Call ``fn(task)`` once the task is done (at once if it already is)."""
        with self._lock:
            if not self.state.terminal:
                self._callbacks.append(fn)
                return
        fn(self)

    def wait_done(self, timeout: float | None) -> bool:
        """Low-level: block on this task alone; True if done."""
        return self._done.wait(timeout)

    # ---- state machine (engine side) -----------------------------------
    def _change(self, new: TaskState, attempt: int | None = None, **data: Any) -> TaskEvent | None:
        """Change state under the lock. Returns the event, or None if refused quietly.

        A change for another attempt than the current one, or out of a terminal
        state, is a lost race and is refused quietly; any other change the table
        does not allow raises ``InvalidTransition``.
        """
        with self._lock:
            return self._change_locked(new, attempt, **data)

    def _change_locked(self, new: TaskState, attempt: int | None, **data: Any) -> TaskEvent | None:
        old = self.state
        if attempt is not None and (attempt != self.attempt or old is not TaskState.RUNNING):
            return None  # a change for an attempt that is no longer the running one
        if old.terminal and new is not TaskState.PENDING:
            return None
        if not can_change(old, new):
            raise InvalidTransition(f"task {self.label}: cannot change from {old} to {new}")
        self.state = new
        now = time.time()
        if new is TaskState.RUNNING:
            self.attempt += 1
            self.stalled = False
            if self.started is None:
                self.started = now
        if new.terminal:
            self.finished = now
            self.reason = data.get("reason", self.reason)
        return TaskEvent(_EVENT_FOR_STATE[new], self, self.attempt, now, data)

    def _finish_callbacks(self) -> None:
        """Run once after a terminal change was published."""
        with self._lock:
            if not self.state.terminal:
                return
            callbacks, self._callbacks = self._callbacks, []
            self._done.set()
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                import logging

                logging.getLogger("ttasks_ipy").exception("done callback of task %s failed", self.label)

    def _reset(self) -> TaskEvent | None:
        """Back to PENDING for a rerun (graphs)."""
        with self._lock:
            ev = self._change_locked(TaskState.PENDING, None)
            self._done.clear()
            self.started = self.finished = None
            self.value, self.has_value = None, False
            self.exception = self.traceback = self.reason = None
            self.blocked_by = []
            return ev

    def __repr__(self) -> str:
        return f"<Task {self.label} {self.kind} {self.status} {self.elapsed:.1f}s>"


def check_not_inside_task() -> None:
    """Raise ``WaitInsideTask`` when called from a task's own code."""
    ctx = current_task()
    if ctx is not None:
        raise WaitInsideTask(
            f"task {ctx.task.label} tried to wait for tasks: waiting inside a task could hold the "
            "last worker slot forever; use a graph (after=) instead"
        )


__all__ = ["Task", "WaitTimeout"]
