"""The executor: worker slots, the queue, backends, timeouts, retries, stall detection, cancel.

State of the scheduler, in prose: ``_slots`` holds one token per free worker
slot and ``_queue`` the QUEUED tasks in arrival order (a cancelled one stays
in it and is skipped when it comes up: no O(n) removal). Both are deques,
whose ``append`` and ``pop`` are atomic: starting and finishing tasks take no
lock shared across tasks. Whoever adds a task to the queue or a token to the
slots then fills (``_fill``): while a task waits, take a token, take a task,
start it; a token taken when no task is left goes back and the loop looks
again, so a task and a free slot never wait for each other. The task is
claimed with its atomic "start unless cancelled" change (``Task.claim``),
which also records the attempt on the task (``claimed_by``) for a cancel to
find. Each started attempt gets an ``Attempt``: its ``JobEvents`` (the
backend's one channel back) and the engine's facts about it (slot, timers,
the backend's handle). An attempt ends in one of two places whoever ends it:
``on_finished`` (the backend says the work ended) or ``_settle`` (a cancel,
a timeout, a block): publish the task's terminal event, stop the work if it
still runs, give the slot back once (``Attempt.give_back_slot``), wake
waiters. Services and slotless runners (prompts) take no worker slot;
services have their own limit. Timers (timeout, stall, kill deadline, retry
backoff) run on one thread. ``_lock`` guards the rarer shared facts: names,
services, the attempts still running after a cancel, the slot count.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.base import Backend, Job, JobEvents, JobHandle
from .backends.thread import ThreadBackend
from .errors import CommandFailed, QueueFull, SpecError, TaskCancelled, WaitTimeout
from .events import EventBus, EventKind, TaskEvent
from .outdir import OutputDir
from .output import TaskOutput
from .reaper import Reaper
from .secrets import redact
from .spec import MAX_SECONDS, TaskSpec
from .states import USER_CANCEL, TaskState
from .supervisor import Supervisor
from .task import Task, check_not_inside_task
from .timers import Timer, Timers

log = logging.getLogger("ttasks_ipy")

ALL_COMPLETED = "all"
FIRST_COMPLETED = "any"
_RUNNING, _QUEUED = TaskState.RUNNING, TaskState.QUEUED


@dataclass(frozen=True)
class ExecutorStats:
    """A snapshot of the executor's load."""

    running: int
    queued: int
    services: int
    lingering: int
    max_workers: int
    total: int


class Attempt(JobEvents):
    """One attempt of one task: the backend's channel back, and what the engine keeps about it."""

    __slots__ = ("task", "number", "backend", "handle", "service", "timer", "last_activity",
                 "ready_carry", "timed_out", "over", "stopped", "ended", "forget_later", "_ex", "_slot")

    def __init__(self, ex: Executor, task: Task, number: int, backend: Backend, slot: bool) -> None:
        self._ex = ex
        self.task = task
        self.number = number
        self.backend = backend
        self.handle: JobHandle | None = None
        self._slot: list[None] = [None] if slot else []  # the worker slot's token while it is held
        self.service = task.spec.service
        self.timer: Timer | None = None
        self.last_activity = 0.0
        self.ready_carry = ""
        self.timed_out = False
        #: True once the task no longer belongs to this attempt (ended, cancelled, retried)
        self.over = False
        #: its work is over but its slot is not given back yet: forgotten when it is
        self.forget_later = False
        #: True once the work was asked to stop
        self.stopped = False
        #: True once the backend said the work ended
        self.ended = False

    @property
    def holds_slot(self) -> bool:
        """True while the attempt's worker slot is not given back."""
        return bool(self._slot)

    def give_back_slot(self) -> bool:
        """True for the one caller who gives the attempt's worker slot back (a list's pop is atomic)."""
        try:
            self._slot.pop()
        except IndexError:
            return False
        return True

    # JobEvents: from the backend's threads
    def output(self, stream: str, text: str) -> None:
        if not self.over and text:
            self._ex.on_output(self, stream, text)

    def progress(self, percent: float | None, message: str | None) -> None:
        if not self.over:
            self._ex.on_progress(self, percent, message)

    def placed(self, where: str | None, pid: int | None) -> None:
        self.task.note_where(self.number, where, pid)

    def finished(self, value: Any = None, error: BaseException | None = None) -> None:
        self._ex.on_finished(self, value, error)


class Executor:
    """Runs tasks in the background under a worker cap.

    ``submit(spec)`` returns a ``Task`` at once. ``spec.backend`` chooses where
    it runs among ``backends`` ('thread' always exists). Settings may change
    while it runs: ``max_workers`` (``set_max_workers``), ``queue_policy``,
    ``grace``, ``tail_chars`` and ``file_cap`` apply to what starts next.
    """

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        max_services: int = 16,
        queue_policy: str = "queue",
        grace: float = 2.0,
        tail_chars: int = 65_536,
        file_cap: int = 100 << 20,
        output_dir: str | os.PathLike[str] | None = None,
        keep_tasks: int = 10_000,
        backend: Backend | None = None,
        backends: Iterable[Backend] = (),
        bus: EventBus | None = None,
    ) -> None:
        self.max_workers = max_workers or max(4, os.cpu_count() or 1)
        self.max_services = max_services
        self.queue_policy = queue_policy
        self.tail_chars = tail_chars
        self.file_cap = file_cap
        self.keep_tasks = keep_tasks
        self.bus = bus or EventBus()
        self._emit = self.bus.publish  # (one bound method for every event)
        self.timers = Timers()
        self.reaper = Reaper(grace)
        self._grace = grace
        self.reaper.start()  # before any task: what a task starts is covered from its fork on
        self.supervisor = Supervisor(grace)  # commands run under it (a subreaper per command)
        self.supervisor.start()
        self._backends: dict[str, Backend] = {"thread": ThreadBackend()}
        if backend is not None:  # the default backend for specs that say 'thread'
            self._backends["thread"] = backend
            self._backends[backend.name] = backend
        for b in backends:
            self._backends[b.name] = b
        self._own_dir = OutputDir.create() if output_dir is None else None  # also sweeps dead kernels' folders
        self.output_dir = Path(output_dir) if output_dir is not None else self._own_dir.path
        if self._own_dir is not None:
            self.reaper.remove_on_exit(self.output_dir)  # if the kernel is killed
        else:  # a folder the caller chose: made if missing (private); each task's own folder in it is private
            self.output_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dir = str(self.output_dir)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._tasks: dict[int, Task] = {}
        self._by_name: dict[str, Task] = {}
        self._queue: collections.deque[Task] = collections.deque()
        self._finished_ids: collections.deque[int] = collections.deque()
        self._slots: collections.deque[None] = collections.deque([None] * self.max_workers)  # the free ones
        self._slot_count = self.max_workers  # free slots and those held by attempts
        self._slot_debt = 0  # slots to drop as they come back (max_workers lowered while they were held)
        self._services = 0
        self._lingering: set[Attempt] = set()  # stopped thread attempts whose code still runs
        self._after_wait: list[Callable[[list[Task]], None]] = []
        self._closed = False

    # ---- settings --------------------------------------------------------
    @property
    def grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL when a task's process tree is ended."""
        return self._grace

    @grace.setter
    def grace(self, value: float) -> None:
        self._grace = value
        self.reaper.set_grace(value)

    def add_backend(self, backend: Backend) -> None:
        """Make ``backend`` available to specs that name it."""
        self._backends[backend.name] = backend

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; ``SpecError`` naming the known ones if there is none."""
        b = self._backends.get(name)
        if b is None:
            known = ", ".join(sorted(self._backends))
            raise SpecError(f"no backend called {name!r} (known: {known})")
        return b

    def forget_results(self, tasks: Iterable[Task]) -> None:
        """No later job reads these tasks' results: backends drop what they kept of them (``Job.keep``)."""
        by_backend: dict[str, list[int]] = {}
        for t in tasks:
            by_backend.setdefault(t.spec.backend, []).append(t.id)
        for name, ids in by_backend.items():
            backend = self._backends.get(name)
            if backend is not None:
                backend.forget(ids)

    # ---- submitting ----------------------------------------------------
    def submit(
        self,
        spec: TaskSpec,
        *,
        replace: bool = False,
        hold: bool = False,
        after: Iterable[Task] = (),
        prepare: Callable[[Task], None] | None = None,
    ) -> Task:
        """Start ``spec`` in the background (or queue it); returns its task at once.

        ``prepare(task)`` is called with the new task before it can start (a
        caller records its own facts about the task there, with no race).

        ``hold`` leaves the task PENDING until ``release(task)`` (or ``block``).
        ``after`` holds it until those tasks succeed, and blocks it as soon as
        one of them does not.

        Raises ``SpecError`` if the name is taken by an active task (unless
        ``replace``, which cancels that task) or the backend is unknown, and
        ``QueueFull`` when the policy or the service limit refuses it.
        """
        if self._closed:
            raise QueueFull("the executor is shut down")
        self.backend(spec.backend)
        old = None
        with self._lock:
            if spec.name is not None:
                old = self._by_name.get(spec.name)
                if old is not None and old.state.terminal:
                    old = None
                if old is not None and not replace:
                    raise SpecError(
                        f"a task named {spec.name!r} is {old.status}: choose another name, "
                        "or pass replace to cancel it"
                    )
            if spec.service and self._services >= self.max_services:
                raise QueueFull(
                    f"{self._services} services are running (max_services={self.max_services}): cancel one first"
                )
            if (not (hold or after) and not spec.service and spec.runner.needs_worker_slot
                    and self.queue_policy == "reject" and not self._slots):
                raise QueueFull(
                    f"all {self.max_workers} workers are busy and queue_policy is 'reject': "
                    "wait, cancel a task, or raise max_workers"
                )
            tid = next(self._ids)
            output = TaskOutput(f"{self._dir}/{tid}", tail_chars=self.tail_chars, file_cap=self.file_cap)
            task = Task(self, tid, spec, output)
            self._tasks[tid] = task
            if spec.name is not None:
                self._by_name[spec.name] = task
            if len(self._tasks) > self.keep_tasks:
                self._forget_old_locked()
        if prepare is not None:
            prepare(task)
        if old is not None:
            self.cancel(old, "replaced")
        deps = list(after)
        if hold or deps:
            self._publish(TaskEvent(EventKind.PENDING, task, 0, time.time(), record=task.record()))
            if deps:
                self._hold_for(task, deps)
        else:
            self._enqueue(task)
        return task

    def _hold_for(self, task: Task, deps: list[Task]) -> None:
        left = [len(deps)]
        lock = threading.Lock()

        def one_done(dep: Task) -> None:
            if task.state is not TaskState.PENDING:
                return
            if dep.state is not TaskState.SUCCEEDED:
                self.block(task, [dep.label])
                return
            with lock:
                left[0] -= 1
                go = left[0] == 0
            if go:
                self.release(task)

        for dep in deps:
            dep.add_done_callback(one_done)

    def release(self, task: Task) -> None:
        """Let a PENDING task run (queue it for a worker slot)."""
        self._enqueue(task)

    def block(self, task: Task, blocked_by: list[str], reason: str | None = None) -> bool:
        """End a PENDING (or QUEUED) task as BLOCKED because ``blocked_by`` did not succeed."""
        ev = task.block(blocked_by, reason)
        if ev is None:
            return False
        self._settle(task, ev, None)
        return True

    def reset(self, task: Task) -> None:
        """Put a finished task back to PENDING for a rerun; ``release`` it to run again."""
        if not task.state.terminal:
            raise SpecError(f"task {task.label} is {task.status}: only a finished task can be reset")
        materialize = getattr(task.value, "materialize", None)
        if materialize is not None:
            materialize()  # a result handed out earlier keeps its own output
        task.output_buffer.clear()
        self._publish(task.reset())

    def _forget_old_locked(self) -> None:
        """Forget the oldest finished tasks beyond ``keep_tasks`` (O(1) amortised per submit)."""
        while len(self._tasks) > self.keep_tasks and self._finished_ids:
            t = self._tasks.get(self._finished_ids.popleft())
            if t is None or not t.state.terminal:
                continue  # rerun since it finished: it stays
            del self._tasks[t.id]
            if t.name and self._by_name.get(t.name) is t:
                del self._by_name[t.name]

    def _enqueue(self, task: Task) -> None:
        ev = task.enqueue()
        if ev is None:
            return
        self._publish(ev)
        self._admit(task)

    def _admit(self, task: Task) -> None:
        """Start a QUEUED task: a service or slotless runner (prompts) at once, else via the queue."""
        spec = task.spec
        if spec.service:
            with self._lock:
                self._services += 1
            self._start(task, slot=False)
        elif not spec.runner.needs_worker_slot:
            self._start(task, slot=False)  # bounded by the runner itself (prompts: a semaphore)
        else:
            self._queue.append(task)
            self._fill()

    def _fill(self) -> None:
        """Start queued tasks while a slot is free (see the module docstring); no lock."""
        queue, slots = self._queue, self._slots
        while queue:
            try:
                slots.pop()
            except IndexError:
                return  # no free slot: whoever gives one back fills
            task = None
            while task is None:
                try:
                    t = queue.popleft()
                except IndexError:
                    break
                if t.state is _QUEUED:
                    task = t
            if task is None:  # others took them: the token goes back and the queue is looked at again
                self._give_slot()
                continue
            self._start(task, slot=True)

    def _give_slot(self) -> None:
        if self._slot_debt:  # max_workers was lowered while this slot was held: it goes away
            with self._lock:
                if self._slot_debt:
                    self._slot_debt -= 1
                    self._slot_count -= 1
                    return
        self._slots.append(None)

    def _start(self, task: Task, *, slot: bool) -> None:
        spec = task.spec
        backend = self._backends[spec.backend]
        attempt = Attempt(self, task, task.attempt + 1, backend, slot)
        ev = task.claim(attempt)  # a cancel landing after the claim finds and settles this very attempt
        if ev is None:  # cancelled (or blocked) while queued
            self._free(attempt, forget=True)  # the slot or service place, once
            return
        attempt.number = ev.attempt
        end_held = task.publish_claim(ev, self._emit)
        if task.state.terminal:  # cancelled while it started: never submit
            attempt.over = True
            self._free(attempt, forget=True, slot=False)
            if end_held:  # its end went out just now, after STARTED: the slot is ours to give back
                self._free(attempt)
            # else whoever ended it published the end itself and gives the slot back after (_settle)
            return
        if spec.timeout is not None:
            attempt.timer = self.timers.schedule(spec.timeout, lambda: self._timed_out(attempt))
        if spec.stall is not None:
            attempt.last_activity = time.monotonic()
            self.timers.schedule(spec.stall, lambda: self._check_stall(attempt))
        try:
            runner = spec.runner
            job = Job(runner.resolve(), task.label, task.id, attempt.number, task.output_buffer, self,
                      runner.after_tasks, runner.has_dependents)
            handle = backend.submit(job, attempt)
        except Exception as e:  # the backend could not take it (e.g. a runner that cannot be sent)
            attempt.finished(error=e)
            return
        if not attempt.ended:  # (a job that ended inside submit leaves no handle: no cycle through its context)
            attempt.handle = handle
        if attempt.over and not attempt.stopped and not attempt.ended:
            # cancelled while the backend took it: the cancel could not reach the handle yet
            self._stop(attempt)

    # ---- the end of an attempt -----------------------------------------
    def on_finished(self, attempt: Attempt, value: Any, error: BaseException | None) -> None:
        """The backend says the attempt ended (``JobEvents.finished``); settles the task unless it lost a race."""
        task = attempt.task
        attempt.ended = True
        attempt.handle = None  # the backend's handle refers back to the attempt: freed without the collector
        timer = attempt.timer
        if timer is not None:
            timer.cancel()
        task.output_buffer.close()
        if attempt.over:
            # it lost a race (cancel, timeout, retry): the winner gives the slot back once its end is out
            self._free(attempt, forget=True, slot=False)
            return
        n = attempt.number
        if error is None:
            ev = task.finish(n, TaskState.SUCCEEDED, "succeeded", value=value)
        elif isinstance(error, TaskCancelled):
            ev = task.finish(n, TaskState.CANCELLED, "cancelled")
        else:
            if isinstance(error, CommandFailed):
                reason, kept = str(error), {"value": error.result}
                exc, tb = None, None
            else:  # what leaves the engine is redacted: a task's error may quote a credential
                reason, kept = redact(f"{type(error).__name__}: {error}"), {}
                exc, tb = error, redact(_user_traceback(error))
            if self._retry(attempt, reason, forget=True):
                return
            ev = task.finish(n, TaskState.FAILED, reason, exception=exc, tb=tb, **kept)
        attempt.over = True
        if ev is None:
            # a cancel or timeout changed the state first and is still on its way to publishing its end:
            # it gives the slot back after that (freeing it here could show one task too many running)
            self._free(attempt, forget=True, slot=False)
            return
        # the end is published before the slot goes to the next task (see _settle)
        task.publish_in_order(ev, self._emit)
        self._free(attempt, forget=True)
        self._finished_ids.append(task.id)
        task.notify_done()

    def _settle(self, task: Task, ev: TaskEvent | None, attempt: Attempt | None) -> None:
        """The ending of a task from outside its work (cancel, timeout, block): publish its terminal event,
        stop the work, free the slot, wake waiters. (``on_finished`` is the same without the stop.)

        The end is published before the slot goes to the next task, so that
        subscribers never see more than ``max_workers`` running.
        """
        if attempt is not None:
            attempt.over = True
            if attempt.timer is not None:
                attempt.timer.cancel()
        published = task.publish_in_order(ev, self._emit)
        if attempt is not None:
            running = task.claimed_by is attempt
            if running and not attempt.stopped and not attempt.ended:
                self._stop(attempt)
            if published:  # else the end waits for the STARTED being published, and _start frees after both
                self._free(attempt)
        if ev is not None:
            self._finished_ids.append(task.id)  # the oldest finished are forgotten first (keep_tasks)
            task.notify_done()

    def _retry(self, attempt: Attempt, reason: str, *, forget: bool = False) -> bool:
        task = attempt.task
        if attempt.number > task.spec.retries or (attempt.stopped and not attempt.timed_out):
            return False
        ev = task.requeue(attempt.number, reason)
        if ev is None:
            return False
        attempt.over = True
        delay = min(task.spec.backoff * 2.0 ** min(attempt.number - 1, 60), MAX_SECONDS)
        publish = self._emit
        publish(ev)  # the requeue's events first; a cancel landing meanwhile is held until they are out
        publish(TaskEvent(EventKind.RETRYING, task, attempt.number, time.time(),
                          {"delay": delay, "reason": reason}, task.record()))
        task.publish_held(publish)
        self._free(attempt, forget=forget)
        task.output_buffer.clear()

        def again() -> None:
            if task.state is _QUEUED:
                self._admit(task)

        self.timers.schedule(delay, again)
        return True

    def _free(self, attempt: Attempt, *, forget: bool = False, slot: bool = True) -> None:
        """Give back the attempt's worker slot (then fill it from the queue) or service place, once.

        ``forget``: the attempt's work ended, so it is no longer the task's running attempt either.
        ``slot=False``: only that (the slot goes back with the published end, by whoever published it).
        """
        if forget and not slot:  # an end that lost a race (or never ran): the winner gives the slot back
            with self._lock:
                if attempt.holds_slot or attempt.service:
                    # still held: whoever gives it back forgets it then (a cancel may yet look the attempt up)
                    attempt.forget_later = True
                    return
            self._forget(attempt)
            return
        if forget:
            self._forget(attempt)
            if attempt.give_back_slot():
                self._give_slot()
                self._fill()
            elif attempt.service:
                with self._lock:
                    self._end_service(attempt)
            return
        # the slot (or service place) is let go of first, and `forget_later` read after that under the
        # lock: a loser that looked at the place (under the lock, above) before then has set it by now,
        # and one that looks after sees the place gone and forgets the attempt itself
        had_slot = attempt.give_back_slot()
        with self._lock:
            if not had_slot and attempt.service:
                self._end_service(attempt)
            later = attempt.forget_later
        if later:
            self._forget(attempt)
        if had_slot:
            self._give_slot()
            self._fill()

    def _end_service(self, attempt: Attempt) -> None:
        """Under ``_lock``: the service's place is given back (once)."""
        if attempt.service:
            attempt.service = False
            self._services = max(0, self._services - 1)

    def _forget(self, attempt: Attempt) -> None:
        """The attempt's work ended: no longer the task's running attempt, nor a lingering one."""
        attempt.task.let_go(attempt)
        if attempt.stopped:  # `stopped` is set before _stop looks at `ended` under the lock (see _stop)
            with self._lock:
                self._lingering.discard(attempt)

    def _stop(self, attempt: Attempt) -> None:
        """Ask the backend to stop the attempt's work; returns at once."""
        handle = attempt.handle
        if handle is None:
            return  # not submitted yet: _start stops it right after submit
        attempt.stopped = True
        try:
            attempt.backend.cancel(handle)
        except Exception:
            log.exception("stopping task %s failed", attempt.task.label)
        if attempt.task.kind == "python" and not attempt.backend.remote:
            # `ended` is set before _forget reads `stopped`, and `stopped` above before `ended` is read
            # here: either _forget sees `stopped` and discards under the lock, or this sees `ended`
            with self._lock:
                if not attempt.ended:
                    self._lingering.add(attempt)

    # ---- output, progress, stall, ready --------------------------------
    def on_output(self, attempt: Attempt, stream: str, text: str) -> None:
        """Text from the attempt (``JobEvents.output``): kept, published, watched for stall and ready."""
        task = attempt.task
        task.output_buffer.append(stream, text)
        spec = task.spec
        if spec.stall is not None:
            attempt.last_activity = time.monotonic()
            if task.stalled and task.note_stalled(attempt.number, False):
                self._publish(TaskEvent(EventKind.STALLED, task, attempt.number, time.time(),
                                        {"stalled": False}, task.record()))
        self.bus.publish(TaskEvent(EventKind.OUTPUT, task, attempt.number, time.time(),
                                   {"stream": stream, "text": text}, task.record()))
        if spec.ready_pattern is not None and task.ready_line is None:
            self._check_ready(attempt, text)

    def _check_ready(self, attempt: Attempt, text: str) -> None:
        task = attempt.task
        pattern = task.spec.ready_pattern
        assert pattern is not None
        carry = attempt.ready_carry + text
        lines = carry.replace("\r", "\n").split("\n")
        attempt.ready_carry = lines[-1][-4096:]
        for line in lines:
            if pattern.search(line) and task.note_ready(line):
                self._publish(TaskEvent(EventKind.READY, task, attempt.number, time.time(),
                                        {"line": line}, task.record()))
                return

    def on_progress(self, attempt: Attempt, percent: float | None, message: str | None) -> None:
        """Progress from the attempt (``JobEvents.progress``), clamped to 0-100."""
        task = attempt.task
        if percent is not None:
            try:
                percent = min(100.0, max(0.0, float(percent)))
            except (TypeError, ValueError):
                percent = None
            if percent is not None and percent != percent:  # NaN
                percent = None
        if not task.note_progress(attempt.number, percent, message):
            return
        attempt.last_activity = time.monotonic()
        self._publish(TaskEvent(EventKind.PROGRESS, task, attempt.number, time.time(),
                                {"percent": percent, "message": message}, task.record()))

    def _check_stall(self, attempt: Attempt) -> None:
        task = attempt.task
        if attempt.over:
            return
        quiet = time.monotonic() - attempt.last_activity
        stall = task.spec.stall
        assert stall is not None
        if quiet >= stall and task.note_stalled(attempt.number, True):
            self._publish(TaskEvent(EventKind.STALLED, task, attempt.number, time.time(),
                                    {"stalled": True, "quiet": quiet}, task.record()))
        again = max(stall - quiet, stall / 4) if quiet < stall else stall / 2
        self.timers.schedule(again, lambda: self._check_stall(attempt))

    # ---- cancel and timeout --------------------------------------------
    def cancel(self, task: Task, reason: str = USER_CANCEL) -> bool:
        """Cancel ``task``; returns at once. False if it had already finished."""
        ev = task.cancel_now(reason)
        if ev is None:
            return False
        self._settle(task, ev, task.claimed_by)  # read after the change: a claim before it is seen
        return True

    def _timed_out(self, attempt: Attempt) -> None:
        task = attempt.task
        if attempt.over:
            return
        reason = f"timed out after {task.spec.timeout:g}s"
        attempt.timed_out = True
        if attempt.number <= task.spec.retries:
            # requeue first: the stopped attempt's own end is then a lost race
            if self._retry(attempt, reason):
                self._stop(attempt)
            return
        ev = task.finish(attempt.number, TaskState.FAILED, reason)
        if ev is not None:
            self._settle(task, ev, attempt)

    # ---- waiting -------------------------------------------------------
    def wait(self, tasks: Iterable[Task], timeout: float | None = None, return_when: str = ALL_COMPLETED) -> list[Task]:
        """Block until all (or any) of ``tasks`` are done; returns the done ones.

        Raises ``WaitTimeout`` when ``timeout`` runs out first, ``WaitInsideTask``
        when called from a task. ``KeyboardInterrupt`` stops the wait, not the tasks.
        """
        check_not_inside_task()
        tasks = list(tasks)
        need = 1 if return_when == FIRST_COMPLETED else len(tasks)
        ready = threading.Event()
        count = itertools.count(1)

        def one_done(_: Task) -> None:  # a countdown (next() is atomic): no rescan, no lock per finished task
            if next(count) >= need:
                ready.set()

        if need == 0:
            ready.set()
        for t in tasks:
            t.add_done_callback(one_done)
        end = None if timeout is None else time.monotonic() + timeout
        # bounded slices so a signal handler (Interrupt) runs promptly
        while not ready.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                names = ", ".join(t.label for t in tasks if not t.state.terminal)
                raise WaitTimeout(f"waited {timeout:g}s; still running: {names}")
            ready.wait(0.25 if left is None else min(left, 0.25))
        done = [t for t in tasks if t.state.terminal]
        for hook in list(self._after_wait):
            hook(done)
        return done

    def add_wait_hook(self, fn: Callable[[list[Task]], None]) -> None:
        """Call ``fn(done_tasks)`` on the waiting thread after each successful ``wait``."""
        self._after_wait.append(fn)

    def remove_wait_hook(self, fn: Callable[[list[Task]], None]) -> None:
        """Undo ``add_wait_hook``."""
        if fn in self._after_wait:
            self._after_wait.remove(fn)

    # ---- looking up ----------------------------------------------------
    def tasks(self) -> list[Task]:
        """Every task still kept, oldest first."""
        with self._lock:
            return list(self._tasks.values())

    def get(self, key: int | str) -> Task | None:
        """The task with id ``key`` (int or digits, '#3' too), or the latest task named ``key``."""
        if isinstance(key, str):
            k = key.lstrip("#")
            if k.isascii() and k.isdigit():
                key = int(k)
            else:
                return self._by_name.get(key)
        return self._tasks.get(key)

    def active(self) -> list[Task]:
        """Tasks that have not finished."""
        return [t for t in self.tasks() if t.state.active]

    def statistics(self) -> ExecutorStats:
        """A frozen snapshot of the load."""
        with self._lock:
            return ExecutorStats(
                running=self._slot_count - len(self._slots),
                queued=sum(1 for t in self._queue if t.state is _QUEUED),
                services=self._services,
                lingering=len(self._lingering),
                max_workers=self.max_workers,
                total=len(self._tasks),
            )

    def backends(self) -> Mapping[str, Backend]:
        """The backends by name."""
        return dict(self._backends)

    def set_max_workers(self, n: int) -> None:
        """Change the worker cap; queued tasks start at once if it grew."""
        if not isinstance(n, int) or n < 1:
            raise SpecError(f"max_workers must be a whole number >= 1, not {n!r}")
        with self._lock:
            more = n - self.max_workers
            self.max_workers = n
            if more > 0:
                paid = min(more, self._slot_debt)  # slots still due to go away stay instead
                self._slot_debt -= paid
                more -= paid
                self._slot_count += more
                self._slots.extend([None] * more)
            else:
                fewer = -more
                while fewer:
                    try:
                        self._slots.pop()
                    except IndexError:
                        break  # the rest are held: they go away as they come back
                    fewer -= 1
                    self._slot_count -= 1
                self._slot_debt += fewer
        self._fill()

    # ---- ending --------------------------------------------------------
    def cancel_all(self, reason: str = "cancelled") -> int:
        """Cancel every active task; returns how many."""
        return sum(self.cancel(t, reason) for t in self.active())

    def shutdown(self, kill_grace: float = 0.5) -> None:
        """Cancel everything, end every process tree (bounded by ``kill_grace``), stop the threads."""
        if self._closed:
            return
        self._closed = True
        pids = [t.pid for t in self.tasks() if t.claimed_by is not None and t.pid]
        self.cancel_all("kernel shutdown")
        from .procs import kill_tree_now

        for pid in pids:
            kill_tree_now(pid, kill_grace)
        for b in set(self._backends.values()):
            try:
                b.shutdown()
            except Exception:
                log.exception("shutting down backend %s failed", b.name)
        self.supervisor.close()
        self.reaper.close()
        self.timers.close()
        self.bus.close()
        if self._own_dir is not None:
            self._own_dir.remove_async()  # renamed aside now, removed by a detached process

    def _publish(self, ev: TaskEvent | None) -> None:
        if ev is not None:
            ev.task.publish_in_order(ev, self._emit)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_traceback(e: BaseException) -> str:
    """The traceback of ``e`` without the engine's own frames at the top (a worker's own text if it has one)."""
    remote = getattr(e, "remote_traceback", None)
    if isinstance(remote, str):
        return remote
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))
