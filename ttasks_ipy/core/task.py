"""``Task``: one unit of work, the handle a user keeps, and the owner of its state machine.

Every state change goes through one of the executor-side methods below
(``enqueue``, ``claim``, ``finish``, ``requeue``, ``cancel_now``, ``block``,
``reset``), each under the task's lock and each returning the event to
publish (None when the change lost a race and was refused quietly). The
caller publishes outside the lock, through ``publish_in_order``: an event made
while the STARTED event of a claim is still on its way (a cancel landing
between the claim and its publication) is held back and published right after
it, so subscribers never see STARTED after CANCELLED. One terminal event per
attempt, whoever wins (finish, cancel, timeout, start).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .context import current_task
from .errors import (
    InvalidTransition,
    TaskCancelled,
    TaskFailed,
    TaskNotDone,
    WaitInsideTask,
)
from .events import EventKind, TaskEvent
from .output import TaskOutput
from .records import TaskRecord
from .spec import TaskSpec
from .states import TERMINAL as _TERMINAL
from .states import TRANSITIONS, USER_CANCEL, TaskState

if TYPE_CHECKING:
    from .executor import Executor

log = logging.getLogger("ttasks_ipy")

_EVENT_FOR_STATE = {
    TaskState.PENDING: EventKind.PENDING,
    TaskState.QUEUED: EventKind.QUEUED,
    TaskState.RUNNING: EventKind.STARTED,
    TaskState.SUCCEEDED: EventKind.SUCCEEDED,
    TaskState.FAILED: EventKind.FAILED,
    TaskState.CANCELLED: EventKind.CANCELLED,
    TaskState.BLOCKED: EventKind.BLOCKED,
}
_RUNNING = TaskState.RUNNING
_WORD = {s: s.value for s in TaskState}
_new_record = tuple.__new__
_STATE, _STATUS, _REASON, _ATTEMPT, _STARTED, _FINISHED, _WHERE, _ERROR = (
    TaskRecord._fields.index(f)
    for f in ("state", "status", "reason", "attempt", "started", "finished", "where", "error")
)
_new_event = tuple.__new__
_NO_VALUE = object()
Publish = Callable[[TaskEvent], None]


class Task:
    """A background task and its handle.

    Read ``status``, ``output``, ``error``, ``result``; call ``wait(timeout)``,
    ``cancel()``, ``done()``. Created by ``Executor.submit``.
    """

    # What a task starts with; an instance sets its own value when it changes (never mutates these).
    started: float | None = None
    finished: float | None = None
    attempt = 0
    #: why each attempt before the current one failed (retries), oldest first
    attempt_reasons: tuple[str, ...] = ()
    #: the value of the last attempt (a command's result even when it failed)
    value: Any = None
    has_value = False
    #: the exception that failed the task, if any
    exception: BaseException | None = None
    #: the traceback text of that exception, for logs
    traceback: str | None = None
    #: why the task ended the way it did ('exit status 2', 'timed out after 5s', ...)
    reason: str | None = None
    progress: tuple[float | None, str | None] = (None, None)
    stalled = False
    ready_line: str | None = None
    #: names of tasks that kept this one from running (graphs); empty unless it was blocked
    blocked_by: Sequence[str] = ()
    #: rich outputs the task displayed (mime bundles: {'text/plain': ..., 'image/png': ...}), capped
    displays: Sequence[dict[str, Any]] = ()
    #: pid of the attempt's process (session leader), for commands and worker processes
    pid: int | None = None
    #: where the current attempt runs, as its backend says (a pid, a worker address)
    where: str | None = None
    #: the names delivered into the user's namespace
    delivered: tuple[str, ...] = ()
    #: the executor's own object for the attempt that claimed the task (opaque here), until it lets go
    claimed_by: Any = None
    _is_done = False  # set once waiters were woken and callbacks ran
    _done_event: threading.Event | None = None  # made for the first low-level waiter
    _callbacks: list[Callable[[Task], None]] | None = None  # made for the first callback
    # ordering of events around a claim (see the module docstring)
    _starting = False
    _held: list[TaskEvent] | None = None  # made for the first held event
    _notify_held = False
    _record: TaskRecord | None = None
    _description: str | None = None

    def __init__(self, executor: Executor, task_id: int, spec: TaskSpec, output: TaskOutput) -> None:
        self.id = task_id
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self._executor = executor
        self._lock = threading.Lock()
        self.state = TaskState.PENDING
        self.output_buffer = output
        self._folder = output.folder
        self.created = time.time()

    # ---- reading -------------------------------------------------------
    @property
    def label(self) -> str:
        """``name`` if it has one, else ``#id``."""
        return self.name or f"#{self.id}"

    @property
    def status(self) -> str:
        """The state as a word, with ``stalled`` when a running task went quiet."""
        s = self.state
        return "stalled" if (self.stalled and s is _RUNNING) else s.value

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

    def record(self) -> TaskRecord:
        """A frozen, secret-free snapshot of the task now (cached until the task changes)."""
        rec = self._record
        if rec is None:
            rec = self._record = self._snapshot()
        return rec

    def _snapshot(self) -> TaskRecord:
        spec = self.spec
        description = self._description
        if description is None:
            description = self._description = spec.runner.describe()
        state = self.state
        if state in _TERMINAL:
            error = self._error_line()
            status = _WORD[state]
        else:
            error = None
            status = "stalled" if (self.stalled and state is _RUNNING) else _WORD[state]
        pct, msg = self.progress
        blocked = self.blocked_by
        # tuple.__new__: the named tuple's own __new__ is a Python function, and this runs per event
        return _new_record(TaskRecord, (
            self.id, self.name, self.kind, description, state, status, self.reason,
            self.attempt, spec.retries, self.created, self.started, self.finished, pct, msg, spec.backend,
            self.where, self._folder, blocked if blocked.__class__ is tuple else tuple(blocked), self.delivered,
            error,
        ))

    def _error_line(self) -> str | None:
        """The first line of ``error``, as a record keeps it."""
        error = self.error
        return error.splitlines()[0] if error else None

    # ---- acting --------------------------------------------------------
    def cancel(self, reason: str = USER_CANCEL) -> bool:
        """Cancel the task; returns at once. False if it had already finished."""
        return self._executor.cancel(self, reason)

    def wait(self, timeout: float | None = None) -> Task:
        """Block until the task is done, at most ``timeout`` seconds (``WaitTimeout`` then)."""
        self._executor.wait([self], timeout=timeout)
        return self

    def add_done_callback(self, fn: Callable[[Task], None]) -> None:
        """Call ``fn(task)`` once the task is done (at once if it already is)."""
        with self._lock:
            if not self._is_done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def wait_done(self, timeout: float | None) -> bool:
        """Low-level: block on this task alone; True if done."""
        with self._lock:
            if self._is_done:
                return True
            if self._done_event is None:
                self._done_event = threading.Event()
            event = self._done_event
        return event.wait(timeout)

    # ---- the state machine, for executors --------------------------------
    def enqueue(self) -> TaskEvent | None:
        """PENDING -> QUEUED (waiting for a slot)."""
        with self._lock:
            if self.state is not TaskState.PENDING:
                return None
            return self._change(TaskState.QUEUED, {})

    def claim(self, by: Any = None) -> TaskEvent | None:
        """QUEUED -> RUNNING unless cancelled meanwhile: starts attempt ``attempt + 1``.

        ``by`` (the executor's object for the attempt) becomes ``claimed_by`` in
        the same step, so whoever changes the state next finds it there. The
        STARTED event returned must be published with ``publish_in_order``;
        until then, events of other changes are held back.
        """
        with self._lock:
            if self.state.terminal:
                return None  # cancelled or blocked while it waited: a lost race
            ev = self._change(_RUNNING, {})  # from any other state than QUEUED: InvalidTransition
            self._starting = True
            self.claimed_by = by
            return ev

    def let_go(self, by: Any) -> None:
        """``by`` is done with the task: ``claimed_by`` is cleared unless a later claim replaced it."""
        with self._lock:
            if self.claimed_by is by:
                self.claimed_by = None

    def finish(
        self,
        attempt: int,
        state: TaskState,
        reason: str,
        *,
        value: Any = _NO_VALUE,
        exception: BaseException | None = None,
        tb: str | None = None,
    ) -> TaskEvent | None:
        """End running attempt ``attempt`` in ``state`` (refused if that attempt is no longer the running one)."""
        with self._lock:
            if attempt != self.attempt or self.state is not _RUNNING:
                return None
            if value is not _NO_VALUE:
                self.value, self.has_value = value, True
            self.exception, self.traceback = exception, tb
            return self._change(state, {"reason": reason}, reason)

    def requeue(self, attempt: int, reason: str) -> TaskEvent | None:
        """RUNNING -> QUEUED: attempt ``attempt`` failed and the task will run again."""
        with self._lock:
            if attempt != self.attempt or self.state is not _RUNNING:
                return None
            self.reason = reason
            self.attempt_reasons += (reason,)
            ev = self._change(TaskState.QUEUED, {"reason": reason})
            self._starting = True  # until publish_held: a cancel's event waits for this one's (and RETRYING)
            return ev

    def cancel_now(self, reason: str) -> TaskEvent | None:
        """Any active state -> CANCELLED."""
        with self._lock:
            if self.state.terminal:
                return None
            return self._change(TaskState.CANCELLED, {"reason": reason}, reason)

    def block(self, blocked_by: list[str], reason: str | None = None) -> TaskEvent | None:
        """PENDING or QUEUED -> BLOCKED: the tasks ``blocked_by`` did not succeed."""
        with self._lock:
            if self.state not in (TaskState.PENDING, TaskState.QUEUED):
                return None
            self.blocked_by = list(blocked_by)
            why = reason or f"blocked by {', '.join(blocked_by)}"
            return self._change(TaskState.BLOCKED, {"reason": why}, why)

    def reset(self) -> TaskEvent | None:
        """A terminal state -> PENDING, for a rerun (graphs): the last run's outcome is forgotten."""
        with self._lock:
            if not self.state.terminal:
                raise InvalidTransition(f"task {self.label}: cannot change from {self.state} to pending")
            self._is_done = False
            self._done_event = None
            self.started = self.finished = None
            self.value, self.has_value = None, False
            self.exception = self.traceback = self.reason = None
            self.attempt_reasons = ()
            self.blocked_by = ()
            self.progress = (None, None)
            self.stalled = False
            self._description = None
            return self._change(TaskState.PENDING, {})

    def _change(self, new: TaskState, data: dict[str, Any], reason: str | None = None) -> TaskEvent:
        old = self.state
        if new not in TRANSITIONS[old]:
            raise InvalidTransition(f"task {self.label}: cannot change from {old} to {new}")
        self.state = new
        now = time.time()
        if new is _RUNNING:
            self.attempt += 1
            self.stalled = False
            self.where = None
            if self.started is None:
                self.started = now
        elif new in _TERMINAL:
            self.finished = now
            if reason is not None:
                self.reason = reason
        prev = self._record
        if prev is not None and (new is _RUNNING or (old is _RUNNING and new in _TERMINAL)):
            # the two changes of every attempt: the last record with the fields the change moved
            # (every other field's writer drops the record, so one kept is up to date but for these)
            f = list(prev)
            f[_STATE], f[_STATUS] = new, _WORD[new]
            if new is _RUNNING:
                f[_ATTEMPT], f[_STARTED], f[_WHERE] = self.attempt, self.started, None
            else:
                f[_REASON], f[_FINISHED], f[_ERROR] = self.reason, now, self._error_line()
            rec = _new_record(TaskRecord, f)
        else:
            rec = self._snapshot()
        self._record = rec
        return _new_event(TaskEvent, (_EVENT_FOR_STATE[new], self, self.attempt, now, data, rec))

    # ---- facts of the running attempt, for executors ---------------------
    def note_progress(self, attempt: int, percent: float | None, message: str | None) -> bool:
        """Record progress of ``attempt``; False if that attempt is no longer the running one."""
        with self._lock:
            if attempt != self.attempt or self.state is not _RUNNING:
                return False
            self.progress = (percent, message)
            self._record = None
            return True

    def note_stalled(self, attempt: int, stalled: bool) -> bool:
        """Mark ``attempt`` stalled (or active again); True if that changed anything."""
        with self._lock:
            if attempt != self.attempt or self.state is not _RUNNING or self.stalled == stalled:
                return False
            self.stalled = stalled
            self._record = None
            return True

    def note_ready(self, line: str) -> bool:
        """Keep the output line that said a service is ready; True the first time."""
        with self._lock:
            if self.ready_line is not None:
                return False
            self.ready_line = line
            return True

    def note_where(self, attempt: int, where: str | None, pid: int | None) -> None:
        """Where attempt ``attempt`` runs (its backend says so once it knows)."""
        with self._lock:
            if attempt == self.attempt:
                self.where, self.pid = where, pid
                self._record = None

    def add_display(self, bundle: dict[str, Any], cap: int) -> bool:
        """Keep a rich output the task displayed (a mime bundle), at most ``cap`` of them; True if kept."""
        with self._lock:
            shown = self.displays
            if len(shown) >= cap:
                return False
            if not isinstance(shown, list):  # the first: a task that shows nothing keeps no list
                shown = self.displays = []
            shown.append(bundle)
            return True

    def note_delivered(self, names: tuple[str, ...]) -> None:
        """The names the task's result was written into (the kernel layer says so)."""
        with self._lock:
            self.delivered = tuple(names)
            self._record = None

    # ---- publishing and completion, for executors ------------------------
    def publish_in_order(self, ev: TaskEvent | None, publish: Publish) -> bool:
        """Publish ``ev`` now, or hold it until the STARTED event of the current claim is out.

        True if it went out now (False: held, or None). Whoever publishes the
        STARTED event publishes what was held right after it.
        """
        if ev is None:
            return False
        if not self._starting:  # the common case, without the lock (see the module docstring)
            publish(ev)
            return True
        with self._lock:
            if self._starting and ev.kind is not EventKind.STARTED:
                if self._held is None:
                    self._held = []
                self._held.append(ev)
                return False
        publish(ev)
        if ev.kind is EventKind.STARTED:
            self.publish_held(publish)
        return True

    def publish_claim(self, ev: TaskEvent, publish: Publish) -> bool:
        """Publish a claim's STARTED event, then what was held meanwhile.

        True if that included the task's end: whoever ended the task then left
        giving back its slot to the caller (an end published directly is
        followed by its publisher giving the slot back).
        """
        publish(ev)
        return self.publish_held(publish)

    def publish_held(self, publish: Publish) -> bool:
        """The events of a claim (STARTED) or a requeue (QUEUED, RETRYING) are out: publish what waited.

        True if a terminal event was among them.
        """
        with self._lock:
            self._starting = False
            held, self._held = self._held or (), None
            notify, self._notify_held = self._notify_held, False
        for h in held:
            publish(h)
        if notify:
            self.notify_done()
        return any(h.kind.terminal for h in held)

    def notify_done(self) -> None:
        """Wake waiters and run done callbacks; call once after a terminal event was published."""
        with self._lock:
            if not self.state.terminal or self._is_done:
                return
            if self._starting:
                self._notify_held = True  # after the held terminal event is out
                return
            callbacks, self._callbacks = self._callbacks or (), None
            self._is_done = True
            event = self._done_event
        if event is not None:
            event.set()
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                log.exception("done callback of task %s failed", self.label)

    def __repr__(self) -> str:
        return f"<Task {self.label} {self.kind} {self.status} {self.elapsed:.1f}s>"


def check_not_inside_task() -> None:
    """Raise ``WaitInsideTask`` when called from a task's own code."""
    ctx = current_task()
    if ctx is not None:
        raise WaitInsideTask(
            f"task {ctx.label} tried to wait for tasks: waiting inside a task could hold the "
            "last worker slot forever; use a graph (after=) instead"
        )


__all__ = ["Task"]
