"""``ThreadBackend``: jobs on reused daemon threads of the kernel's process.

Pool state, in prose: jobs wait in one ``SimpleQueue``; ``_idle`` holds one
token per thread waiting on that queue (a deque: its ``append`` and ``pop``
are atomic, so a job passes from the kernel to a thread without a lock).
``submit`` puts the job on the queue and takes a token; when there is none,
it starts a new thread. A thread that has waited ``idle_timeout`` seconds
without work takes its own token back and exits; if it cannot (a ``submit``
has just claimed it), a job is on its way and it waits again. Each thread
counts its own jobs (one writer each) and keeps the stream routers of
``capture`` in place for its life, so its tasks' own installs cost nothing. The executor bounds how many
jobs run at once, so the pool never holds more threads than that plus the
slotless jobs (prompts, services) and the attempts still finishing after a
cancel (a thread cannot be killed).

A cancel runs the aborts the runner registered on its context
(``TaskContext.on_cancel``): a command ends its process tree, a prompt its
request, a Python body gets ``TaskCancelled`` raised in its thread.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading

from .. import capture
from ..context import TaskContext
from .base import Backend, BackendStats, Job, JobEvents, JobHandle
from .sync import run_job

log = logging.getLogger("ttasks_ipy")

_STOP = None


class _ThreadJob(JobHandle):
    __slots__ = ("job", "events", "ctx")

    def __init__(self, job: Job, events: JobEvents, ctx: TaskContext) -> None:
        self.job = job
        self.events = events
        self.ctx = ctx


class _Worker:
    """One pool thread's own counts (written by that thread only)."""

    __slots__ = ("busy", "jobs")

    def __init__(self) -> None:
        self.busy = False
        self.jobs = 0


class ThreadBackend(Backend):
    """Runs each job on a thread of a pool that grows on demand and shrinks when idle."""

    name = "thread"

    def __init__(self, *, idle_timeout: float = 30.0, thread_name: str = "ttasks-worker") -> None:
        self.idle_timeout = idle_timeout
        self._thread_name = thread_name
        self._queue: queue.SimpleQueue[_ThreadJob | None] = queue.SimpleQueue()
        self._idle: collections.deque[None] = collections.deque()  # a token per idle thread
        self._lock = threading.Lock()
        self._threads = 0
        self._workers: set[_Worker] = set()
        self._done = 0  # jobs of threads that have exited
        self._closed = False

    def submit(self, job: Job, events: JobEvents) -> JobHandle:
        ctx = TaskContext(job.label, job.attempt, events, task_id=job.task_id, store=job.store,
                          services=job.services)
        handle = _ThreadJob(job, events, ctx)
        self._queue.put(handle)
        try:
            self._idle.pop()  # an idle thread takes it
        except IndexError:
            with self._lock:
                self._threads += 1
                n = self._threads
            threading.Thread(target=self._work, name=f"{self._thread_name}-{n}", daemon=True).start()
        return handle

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, _ThreadJob)
        handle.ctx.cancel()

    def _work(self) -> None:
        q, idle = self._queue, self._idle
        me = _Worker()
        with self._lock:
            self._workers.add(me)

        def free() -> None:  # this thread takes work again from here (once per job: ``busy`` says if it was)
            if me.busy:
                me.busy = False
                idle.append(None)

        capture.install()
        try:
            while True:
                try:
                    item = q.get(timeout=self.idle_timeout)
                except queue.Empty:
                    try:
                        idle.pop()
                        break  # took a token back: nobody counts on this thread now
                    except IndexError:
                        continue  # a submit claimed them all: its job is on the way
                if item is _STOP:
                    break
                try:
                    me.busy = True
                    me.jobs += 1
                    run_job(item.job, item.ctx, item.events, free)
                except BaseException:  # noqa: BLE001 - a late cancel exception must not end a pooled thread
                    log.debug("a job's thread caught a late exception", exc_info=True)
                free()
        finally:
            capture.uninstall()
            with self._lock:
                self._threads -= 1
                self._workers.discard(me)
                self._done += me.jobs

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._queue.put(_STOP)

    def statistics(self) -> BackendStats:
        with self._lock:
            workers = list(self._workers)
            done, threads = self._done, self._threads
        running = sum(w.busy for w in workers)
        return BackendStats(self.name, running, done + sum(w.jobs for w in workers), (("threads", threads),))

    @property
    def threads(self) -> int:
        """How many pool threads exist now."""
        return self._threads


__all__ = ["ThreadBackend"]
