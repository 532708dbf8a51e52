"""The executor: worker slots, the queue, timeouts, retries, stall detection, cancel.

State of the scheduler, in prose: ``_running`` counts claimed worker slots,
``_queue`` holds QUEUED tasks in arrival order (a cancelled one stays in it and
is skipped when it comes up: no O(n) removal). A slot is claimed under
``_lock`` and started outside it with the task's atomic "start unless
cancelled" change. A slot is freed exactly once per attempt (``_slot_of``),
when the attempt ends or is cancelled, and the freed slot goes straight to the
next queued task. Services take no worker slot; they have their own limit.
Timers (timeout, stall, kill deadline, retry backoff) run on one thread.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import Backend, ThreadBackend
from .context import RunContext
from .errors import CommandFailed, QueueFull, SpecError, TaskCancelled, WaitTimeout
from .events import EventBus, EventKind, TaskEvent
from .outdir import OutputDir
from .output import TaskOutput
from .reaper import Reaper
from .spec import TaskSpec
from .states import TaskState
from .supervisor import Supervisor
from .task import Task, check_not_inside_task
from .timers import Timers

log = logging.getLogger("ttasks_ipy")

ALL_COMPLETED = "all"
FIRST_COMPLETED = "any"


@dataclass(frozen=True)
class ExecutorStats:
    """A snapshot of the executor's load."""

    running: int
    queued: int
    services: int
    lingering: int
    max_workers: int
    total: int


class Executor:
    """Runs tasks in the background under a worker cap.

    ``submit(spec)`` returns a ``Task`` at once. Settings may change while it runs.
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
        bus: EventBus | None = None,
    ) -> None:
        self.max_workers = max_workers or max(4, os.cpu_count() or 1)
        self.max_services = max_services
        self.queue_policy = queue_policy
        self.grace = grace
        self.tail_chars = tail_chars
        self.file_cap = file_cap
        self.keep_tasks = keep_tasks
        self.bus = bus or EventBus()
        self.backend = backend or ThreadBackend()
        self.timers = Timers()
        self.reaper = Reaper(grace)
        self.reaper.start()  # before any task: what a task starts is covered from its fork on
        self.supervisor = Supervisor(grace)  # commands run under it (a subreaper per command)
        self.supervisor.start()
        self._own_dir = OutputDir.create() if output_dir is None else None  # also sweeps dead kernels' folders
        self.output_dir = Path(output_dir) if output_dir is not None else self._own_dir.path
        if self._own_dir is not None:
            self.reaper.remove_on_exit(self.output_dir)  # if the kernel is killed
        os.chmod(self.output_dir, 0o700)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._tasks: dict[int, Task] = {}
        self._by_name: dict[str, Task] = {}
        self._queue: collections.deque[Task] = collections.deque()
        self._finished_ids: collections.deque[int] = collections.deque()
        self._running = 0
        self._services = 0
        self._slot_of: dict[int, int] = {}  # task id -> attempt holding a worker slot
        self._contexts: dict[int, RunContext] = {}
        self._lingering: set[int] = set()
        self._after_wait: list[Callable[[list[Task]], None]] = []
        self._closed = False

    # ---- submitting ----------------------------------------------------
    def submit(
        self,
        spec: TaskSpec,
        *,
        replace: bool = False,
        hold: bool = False,
        after: Iterable[Task] = (),
    ) -> Task:
        """Start ``spec`` in the background (or queue it); returns its task at once.

        ``hold`` leaves the task PENDING until ``release(task)`` (or ``block``).
        ``after`` holds it until those tasks succeed, and blocks it as soon as
        one of them does not.

        Raises ``SpecError`` if the name is taken by an active task (unless
        ``replace``, which cancels that task) and ``QueueFull`` when the policy
        or the service limit refuses it.
        """
        if self._closed:
            raise QueueFull("the executor is shut down")
        with self._lock:
            if spec.name is not None:
                old = self._by_name.get(spec.name)
                if old is not None and old.state.active:
                    if not replace:
                        raise SpecError(
                            f"a task named {spec.name!r} is {old.status}: choose another name, "
                            "or pass replace to cancel it"
                        )
                else:
                    old = None
            else:
                old = None
            if spec.service:
                if self._services >= self.max_services:
                    raise QueueFull(
                        f"{self._services} services are running (max_services={self.max_services}): "
                        "cancel one first"
                    )
            if not (hold or after) and not spec.service and getattr(spec.runner, "needs_worker_slot", True):
                if self.queue_policy == "reject" and self._running >= self.max_workers:
                    raise QueueFull(
                        f"all {self.max_workers} workers are busy and queue_policy is 'reject': "
                        "wait, cancel a task, or raise max_workers"
                    )
            tid = next(self._ids)
            output = TaskOutput(self.output_dir / str(tid), tail_chars=self.tail_chars, file_cap=self.file_cap)
            task = Task(self, tid, spec, output)
            self._tasks[tid] = task
            if spec.name is not None:
                self._by_name[spec.name] = task
            self._forget_old_locked()
        task.add_done_callback(self._remember_finished)
        if old is not None:
            self.cancel(old, "replaced")
        deps = list(after)
        if hold or deps:
            self._publish(TaskEvent(EventKind.PENDING, task, 0))
            if deps:
                self._hold_for(task, deps)
        else:
            self._enqueue(task)
        return task

    def _remember_finished(self, task: Task) -> None:
        self._finished_ids.append(task.id)

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
        if task.state is TaskState.PENDING:
            self._enqueue(task)

    def block(self, task: Task, blocked_by: list[str], reason: str | None = None) -> bool:
        """End a PENDING (or QUEUED) task as BLOCKED because ``blocked_by`` did not succeed."""
        with task._lock:
            if task.state not in (TaskState.PENDING, TaskState.QUEUED):
                return False
            task.blocked_by = list(blocked_by)
            ev = task._change_locked(
                TaskState.BLOCKED, None, reason=reason or f"blocked by {', '.join(blocked_by)}"
            )
        if ev is None:
            return False
        self._publish(ev)
        task._finish_callbacks()
        return True

    def reset(self, task: Task) -> None:
        """Put a finished task back to PENDING for a rerun; ``release`` it to run again."""
        if not task.state.terminal:
            raise SpecError(f"task {task.label} is {task.status}: only a finished task can be reset")
        materialize = getattr(task.value, "_read", None)
        if materialize is not None:
            materialize()  # a result handed out earlier keeps its own output
        task.output_buffer.clear()
        self._publish(task._reset())

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
        ev = task._change(TaskState.QUEUED)
        if ev is None or task.state is not TaskState.QUEUED:
            return
        self._publish(ev)
        self._admit(task)

    def _admit(self, task: Task) -> None:
        """Start a QUEUED task: a service or slotless runner (prompts) at once, else via the queue."""
        if task.spec.service:
            with self._lock:
                self._services += 1
            self._start(task, slot=False)
        elif not getattr(task.spec.runner, "needs_worker_slot", True):
            self._start(task, slot=False)  # bounded by the runner itself (prompts: a semaphore)
        else:
            self._queue_and_fill(task)

    def _queue_and_fill(self, task: Task | None) -> None:
        to_start = []
        with self._lock:
            if task is not None:
                self._queue.append(task)
            while self._queue and self._running < self.max_workers:
                t = self._queue.popleft()
                if t.state is not TaskState.QUEUED:
                    continue
                self._running += 1
                self._slot_of[t.id] = t.attempt + 1
                to_start.append(t)
        for t in to_start:
            self._start(t, slot=True)

    def _start(self, task: Task, *, slot: bool) -> None:
        ev = task._change(TaskState.RUNNING)
        if ev is None or task.state is not TaskState.RUNNING:  # cancelled while queued
            if slot:
                self._release_slot(task, task.attempt + 1)
            elif task.spec.service:
                self._release_service()
            return
        ctx = RunContext(task, task.attempt, self._on_output, self._on_progress)
        ctx.process = bool(getattr(task.spec.runner, "runs_in_process", False))
        with self._lock:
            self._contexts[task.id] = ctx
        self._publish(ev)
        spec = task.spec
        if spec.timeout is not None:
            ctx.timeout_timer = self.timers.schedule(spec.timeout, lambda: self._timed_out(ctx))
        if spec.stall is not None:
            ctx.last_activity = time.monotonic()
            self.timers.schedule(spec.stall, lambda: self._check_stall(ctx))
        self.backend.start(lambda: self._run_attempt(ctx), f"ttasks-{task.label}")

    # ---- running -------------------------------------------------------
    def _run_attempt(self, ctx: RunContext) -> None:
        task = ctx.task
        token = ctx.activate()
        try:
            value = task.spec.runner.run(ctx)
        except TaskCancelled:
            self._end_attempt(ctx, TaskState.CANCELLED, reason="cancelled")
        except CommandFailed as e:
            self._end_attempt(ctx, TaskState.FAILED, value=e.result, has_value=True, reason=str(e))
        except BaseException as e:  # the task's own failure, whatever it is
            if ctx.cancelled:
                self._end_attempt(ctx, TaskState.CANCELLED, reason="cancelled")
            else:
                tb = _user_traceback(e)
                self._end_attempt(ctx, TaskState.FAILED, exception=e, tb=tb, reason=f"{type(e).__name__}: {e}")
        else:
            self._end_attempt(ctx, TaskState.SUCCEEDED, value=value, has_value=True, reason="succeeded")
        finally:
            ctx.deactivate(token)
            with self._lock:
                if self._contexts.get(task.id) is ctx:
                    del self._contexts[task.id]
                self._lingering.discard(id(ctx))
            task.output_buffer.close()

    def _end_attempt(
        self,
        ctx: RunContext,
        state: TaskState,
        *,
        value: Any = None,
        has_value: bool = False,
        exception: BaseException | None = None,
        tb: str | None = None,
        reason: str,
    ) -> None:
        task = ctx.task
        timer = ctx.timeout_timer
        if timer is not None:
            timer.cancel()
        if task.attempt != ctx.attempt or task.state is not TaskState.RUNNING:
            self._free(task, ctx)  # this attempt lost a race to cancel, timeout or retry
            return
        if state is TaskState.FAILED and self._retry(ctx, reason):
            return
        with task._lock:
            if task.attempt != ctx.attempt or task.state.terminal:
                ev = None  # lost the race to cancel or timeout
            else:
                if has_value:
                    task.value, task.has_value = value, True
                task.exception, task.traceback = exception, tb
                ev = task._change_locked(state, ctx.attempt, reason=reason)
        # the end is published before the slot goes to the next task, so that
        # subscribers never see more than max_workers running
        self._publish(ev)
        self._free(task, ctx)
        if ev is not None:
            task._finish_callbacks()

    def _retry(self, ctx: RunContext, reason: str) -> bool:
        task = ctx.task
        if task.attempt > task.spec.retries or ctx.cancelled and not ctx.timed_out:
            return False
        delay = task.spec.backoff * (2 ** (task.attempt - 1))
        ev = task._change(TaskState.QUEUED, ctx.attempt, reason=reason)
        if ev is None:
            return False
        self._publish(TaskEvent(EventKind.RETRYING, task, ctx.attempt, data={"delay": delay, "reason": reason}))
        self._free(task, ctx)
        task.output_buffer.clear()

        def again() -> None:
            if task.state is TaskState.QUEUED:
                self._admit(task)

        self.timers.schedule(delay, again)
        return True

    def _free(self, task: Task, ctx: RunContext) -> None:
        if task.spec.service:
            with self._lock:
                if ctx.service_freed:
                    return
                ctx.service_freed = True
            self._release_service()
        else:
            self._release_slot(task, ctx.attempt)

    def _release_service(self) -> None:
        with self._lock:
            self._services = max(0, self._services - 1)

    def _release_slot(self, task: Task, attempt: int) -> None:
        with self._lock:
            if self._slot_of.get(task.id) != attempt:
                return
            del self._slot_of[task.id]
            self._running -= 1
        self._queue_and_fill(None)

    # ---- output, progress, stall, ready --------------------------------
    def _on_output(self, ctx: RunContext, stream: str, text: str) -> None:
        task = ctx.task
        if task.attempt != ctx.attempt or task.state is not TaskState.RUNNING:
            return
        task.output_buffer.append(stream, text)
        if task.spec.stall is not None:
            ctx.last_activity = time.monotonic()
            if task.stalled:
                task.stalled = False
                self._publish(TaskEvent(EventKind.STALLED, task, ctx.attempt, data={"stalled": False}))
        self._publish(TaskEvent(EventKind.OUTPUT, task, ctx.attempt, data={"stream": stream, "text": text}))
        if task.spec.ready is not None and task.ready_line is None:
            self._check_ready(ctx, text)

    def _check_ready(self, ctx: RunContext, text: str) -> None:
        task = ctx.task
        carry = ctx.ready_carry + text
        lines = re.split(r"[\r\n]", carry)
        ctx.ready_carry = lines[-1][-4096:]
        pattern = task.spec._ready_re
        for line in lines:
            if pattern.search(line):
                task.ready_line = line
                self._publish(TaskEvent(EventKind.READY, task, ctx.attempt, data={"line": line}))
                return

    def _on_progress(self, ctx: RunContext, percent: float | None, message: str | None) -> None:
        task = ctx.task
        if task.attempt != ctx.attempt:
            return
        if percent is not None:
            percent = min(100.0, max(0.0, float(percent)))
        task.progress = (percent, message)
        ctx.last_activity = time.monotonic()
        self._publish(TaskEvent(EventKind.PROGRESS, task, ctx.attempt, data={"percent": percent, "message": message}))

    def _check_stall(self, ctx: RunContext) -> None:
        task = ctx.task
        if task.state is not TaskState.RUNNING or task.attempt != ctx.attempt:
            return
        quiet = time.monotonic() - ctx.last_activity
        stall = task.spec.stall
        assert stall is not None
        if quiet >= stall and not task.stalled:
            task.stalled = True
            self._publish(TaskEvent(EventKind.STALLED, task, ctx.attempt, data={"stalled": True, "quiet": quiet}))
        again = max(stall - quiet, stall / 4) if quiet < stall else stall / 2
        self.timers.schedule(again, lambda: self._check_stall(ctx))

    # ---- cancel and timeout --------------------------------------------
    def cancel(self, task: Task, reason: str = "cancelled") -> bool:
        """Cancel ``task``; returns at once. False if it had already finished."""
        with task._lock:
            was_running = task.state is TaskState.RUNNING
            ev = task._change_locked(TaskState.CANCELLED, None, reason=reason)
        if ev is None:
            return False
        ctx = self._contexts.get(task.id) if was_running else None
        if ctx is not None:
            self._stop_attempt(ctx)
        self._publish(ev)
        if ctx is not None:
            self._free(task, ctx)
        task._finish_callbacks()
        return True

    def _stop_attempt(self, ctx: RunContext) -> None:
        ctx.mark_cancelled()
        timer = ctx.timeout_timer
        if timer is not None:
            timer.cancel()
        try:
            ctx.task.spec.runner.cancel(ctx)
        except Exception:
            log.exception("stopping task %s failed", ctx.task.label)
        if ctx.task.kind == "python" and not ctx.process:
            with self._lock:
                if self._contexts.get(ctx.task.id) is ctx:
                    self._lingering.add(id(ctx))

    def _timed_out(self, ctx: RunContext) -> None:
        task = ctx.task
        if task.state is not TaskState.RUNNING or task.attempt != ctx.attempt:
            return
        reason = f"timed out after {task.spec.timeout:g}s"
        ctx.timed_out = True
        if task.attempt <= task.spec.retries:
            # change the state first: the stopped attempt's own end is then a lost race
            if self._retry(ctx, reason):
                self._stop_attempt(ctx)
            return
        with task._lock:
            ev = task._change_locked(TaskState.FAILED, ctx.attempt, reason=reason)
        if ev is None:
            return
        self._publish(ev)
        self._stop_attempt(ctx)
        self._free(task, ctx)
        task._finish_callbacks()

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
        count = [0]
        lock = threading.Lock()

        def one_done(_: Task) -> None:  # a countdown: no rescan of the waited tasks per finished task
            with lock:
                count[0] += 1
                if count[0] >= need:
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
            if k.isdigit():
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
                running=self._running,
                queued=sum(1 for t in self._queue if t.state is TaskState.QUEUED),
                services=self._services,
                lingering=len(self._lingering),
                max_workers=self.max_workers,
                total=len(self._tasks),
            )

    def set_max_workers(self, n: int) -> None:
        """Change the worker cap; queued tasks start at once if it grew."""
        if n < 1:
            raise SpecError(f"max_workers must be >= 1, not {n}")
        self.max_workers = n
        self._queue_and_fill(None)

    # ---- ending --------------------------------------------------------
    def cancel_all(self, reason: str = "cancelled") -> int:
        """Cancel every active task; returns how many."""
        return sum(self.cancel(t, reason) for t in self.active())

    def shutdown(self, kill_grace: float = 0.5) -> None:
        """Cancel everything, end every process tree (bounded by ``kill_grace``), stop the threads."""
        if self._closed:
            return
        self._closed = True
        contexts = list(self._contexts.values())
        self.cancel_all("kernel shutdown")
        from .procs import kill_tree_now

        for ctx in contexts:
            sid = ctx.sid
            if sid:
                kill_tree_now(sid, kill_grace)
        self.supervisor.close()
        self.reaper.close()
        self.timers.close()
        self.backend.shutdown()
        self.bus.close()
        if self._own_dir is not None:
            self._own_dir.remove_async()  # renamed aside now, removed by a detached process

    def _publish(self, ev: TaskEvent | None) -> None:
        if ev is not None:
            self.bus.publish(ev)


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
