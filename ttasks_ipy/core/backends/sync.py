"""``SyncBackend``: runs each job inline in ``submit``; deterministic, for engine tests."""
from __future__ import annotations

from collections.abc import Callable

from ..context import TaskContext
from .base import Backend, BackendStats, Job, JobEvents, JobHandle


class _SyncJob(JobHandle):
    __slots__ = ("ctx",)

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx


class SyncBackend(Backend):
    """Runs the job on the submitting thread before ``submit`` returns (cancel works from other threads)."""

    name = "sync"

    def __init__(self) -> None:
        self._submitted = 0
        self._running = 0

    def submit(self, job: Job, events: JobEvents) -> JobHandle:
        self._submitted += 1
        ctx = TaskContext(job.label, job.attempt, events, task_id=job.task_id, store=job.store,
                          services=job.services)
        handle = _SyncJob(ctx)
        self._running += 1
        try:
            run_job(job, ctx, events)
        finally:
            self._running -= 1
        return handle

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, _SyncJob)
        handle.ctx.cancel()

    def statistics(self) -> BackendStats:
        return BackendStats(self.name, self._running, self._submitted)


def run_job(job: Job, ctx: TaskContext, events: JobEvents, before_end: Callable[[], None] | None = None) -> None:
    """Run ``job.runner`` with ``ctx`` current on this thread and report the end to ``events``.

    ``before_end`` runs just before ``events.finished`` (a pool marks its
    thread free there, so the next job, started from ``finished``, reuses it).
    """
    token = ctx.activate()
    try:
        value = job.runner.run(ctx)
    except BaseException as e:  # the task's own failure, whatever it is
        ctx.deactivate(token)
        if before_end is not None:
            before_end()
        events.finished(error=e)
    else:
        ctx.deactivate(token)
        if before_end is not None:
            before_end()
        events.finished(value=value)
