"""``ProcessBackend``: jobs in our worker processes (``WorkerPool``), one implementation of ``Backend``.

A job's runner is pickled with cloudpickle and sent to an idle worker with
the kernel's working directory, ``sys.path`` and environment (each sent only
when it changed since that worker last got it). A kernel-side thread per
running job streams the worker's stdout and stderr (file-descriptor level)
and its progress into the job's events. Cancel kills the worker's whole
session (SIGTERM, grace, SIGKILL) and the pool replaces it; only the task that
ran there ends. A reply's exception is re-raised here when it can be
unpickled, else as ``RemoteError``; either way it carries the traceback text
from the worker (``remote_traceback``) and a ``RemoteTraceback`` cause.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import cloudpickle

from ...context import TaskContext
from ...errors import RemoteTraceback, ResultError, SpecError, TaskCancelled, WorkerDied
from ...spec import Runner
from ..base import Backend, BackendStats, Job, JobEvents, JobHandle
from ..remote import one_line, remote_exception
from ..thread import ThreadBackend
from .pool import WorkerPool, WorkerProcess


class ProcessBackend(Backend):
    """Runs jobs in the worker processes of ``pool`` (true parallelism; cancel ends the process)."""

    name = "process"
    remote = True

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self._threads = ThreadBackend(thread_name="ttasks-process-job")

    def submit(self, job: Job, events: JobEvents) -> JobHandle:
        on_worker = _OnWorker(self.pool, job.runner, job.attempt)
        return self._threads.submit(Job(on_worker, job.label, job.task_id, job.attempt), events)

    def cancel(self, handle: JobHandle) -> None:
        self._threads.cancel(handle)  # runs the abort the job registered: kill its worker

    def shutdown(self) -> None:
        self._threads.shutdown()
        self.pool.shutdown()

    def statistics(self) -> BackendStats:
        s = self.pool.statistics()
        t = self._threads.statistics()
        return BackendStats(self.name, t.running, t.submitted,
                            (("workers", s.size), ("idle", s.idle), ("busy", s.busy), ("replaced", s.replaced)))


class _OnWorker(Runner):
    """The kernel-side half of a job: get a worker, send the pickled runner, follow it, return its value."""

    kind = "python"

    def __init__(self, pool: WorkerPool, runner: Runner, attempt: int) -> None:
        self.pool = pool
        self.runner = runner
        self.attempt = attempt

    def run(self, ctx: TaskContext) -> Any:
        try:
            payload = cloudpickle.dumps(self.runner, protocol=5)
        except SpecError:
            raise
        except Exception as e:
            raise SpecError(f"the task cannot be sent to a worker process: {type(e).__name__}: {e}") from None
        ctx.check()
        try:
            reply = self._run_on_worker(payload, ctx)
        except WorkerDied as e:
            if not e.before_job:
                raise
            # the worker died before the job reached it (killed while idle, failed to start): once more
            reply = self._run_on_worker(payload, ctx)
        ctx.check()
        return _outcome(reply)

    def _run_on_worker(self, payload: bytes, ctx: TaskContext) -> dict[str, Any]:
        worker = self.pool.acquire(cancelled=lambda: ctx.cancelled)
        unregister = ctx.on_cancel(worker.kill)
        try:
            ctx.check()
            ctx.placed(worker.pid, f"worker process {worker.pid}")
            job = {"op": "run", "runner": payload, "label": ctx.label, "attempt": self.attempt}
            _add_changes(job, worker)
            try:
                return worker.run_job(job, ctx)
            except WorkerDied:
                if ctx.cancelled:
                    raise TaskCancelled(f"task {ctx.label} was cancelled") from None
                raise
        finally:
            unregister()
            self.pool.release(worker)


def _add_changes(job: dict[str, Any], worker: WorkerProcess) -> None:
    """Put the kernel's cwd, ``sys.path`` and environment on ``job`` where they changed for ``worker``."""
    cwd, path, env = os.getcwd(), list(sys.path), dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    last = worker.sent
    if last.get("cwd") != cwd:
        job["cwd"] = last["cwd"] = cwd
    if last.get("path") != path:
        job["path"] = last["path"] = path
    if last.get("env") != env:
        job["env"] = last["env"] = env


def _outcome(reply: dict[str, Any]) -> Any:
    op = reply["op"]
    if op == "done":
        try:
            return cloudpickle.loads(reply["value"])
        except Exception as e:
            raise ResultError(f"the result of the worker process cannot be loaded here: {one_line(e)}") from None
    if op == "error":
        exc = remote_exception(reply)
        raise exc from RemoteTraceback(reply.get("traceback") or "")
    if reply.get("stage") == "result":
        raise ResultError(reply["message"])
    raise SpecError(reply["message"])




__all__ = ["ProcessBackend"]
