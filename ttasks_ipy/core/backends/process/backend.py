"""``ProcessBackend``: jobs in our worker processes (``WorkerPool``), one implementation of ``Backend``.

A job's runner is pickled (``pickle_runner``) and sent to an idle worker with
the kernel's working directory, ``sys.path`` and environment (each sent only
when it changed since that worker last got it). One kernel thread (the
``Pump``) sends the jobs and streams every running job's stdout and stderr
(file-descriptor level) and progress into its events. Cancel kills the worker's whole
session (SIGTERM, grace, SIGKILL) and the pool replaces it; only the task that
ran there ends. A reply's exception is re-raised here when it can be
unpickled, else as ``RemoteError``; either way it carries the traceback text
from the worker (``remote_traceback``) and a ``RemoteTraceback`` cause.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from ...spec import Runner
from ..base import Backend, BackendStats, Job, JobEvents, JobHandle
from ..remote import pickle_runner, reply_outcome
from .pool import WorkerPool
from .pump import ProcessJob, Pump


class ProcessBackend(Backend):
    """Runs jobs in the worker processes of ``pool`` (true parallelism; cancel ends the process)."""

    name = "process"
    remote = True

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self._pump = Pump(pool, _pickled, _outcome, _surroundings)

    def submit(self, job: Job, events: JobEvents) -> JobHandle:
        handle = ProcessJob(job, events, {"label": job.label, "attempt": job.attempt})
        self._pump.submit(handle)  # pickled there: a big input never holds up the cell that dispatched it
        return handle

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, ProcessJob)
        self._pump.cancel(handle)  # a waiting job ends; a running one's worker session is ended

    def shutdown(self) -> None:
        self._pump.close()
        self.pool.shutdown()
        self._pump.join()

    def statistics(self) -> BackendStats:
        s = self.pool.statistics()
        p = self._pump
        return BackendStats(self.name, p.running, p.submitted,
                            (("workers", s.size), ("idle", s.idle), ("busy", s.busy), ("replaced", s.replaced)))


def _pickled(runner: Runner) -> bytes:
    return pickle_runner(runner, "a worker process")


def _surroundings() -> dict[str, Any]:
    """The kernel's cwd, ``sys.path`` and environment, as a worker takes them on."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return {"cwd": os.getcwd(), "path": list(sys.path), "env": env}


def _outcome(reply: dict[str, Any]) -> Any:
    return reply_outcome(reply, "the worker process")


__all__ = ["ProcessBackend"]
