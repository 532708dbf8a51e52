"""``TaskRecord``: a frozen snapshot of a task, the form in which a task leaves the engine.

Events carry it, views render it, a ledger stores it. It is built only from
facts that hold no secret: a runner's ``describe()`` (a command as it will
run, a prompt's first line), names, states, times and counts. No environment
values, request headers or inputs ever reach it.
"""
from __future__ import annotations

from typing import NamedTuple

from .states import TaskState


class TaskRecord(NamedTuple):
    """What a task is and where it stands, at one moment. Immutable and picklable."""

    id: int
    name: str | None
    kind: str
    #: one secret-free line saying what runs
    description: str
    state: TaskState
    #: the state as a word, ``stalled`` for a running task gone quiet
    status: str
    #: why it ended the way it did, or why it is being retried
    reason: str | None
    #: the attempt number (0 before the first start)
    attempt: int
    retries: int
    created: float
    started: float | None
    finished: float | None
    progress: float | None
    progress_message: str | None
    #: the backend the task runs on ('thread', 'process', 'sync', ...)
    backend: str
    #: where the current attempt runs (a pid, a worker address), once known
    where: str | None
    #: the folder holding the task's output files, if any
    output_dir: str | None
    #: the names of tasks that kept it from running
    blocked_by: tuple[str, ...]
    #: names written into the user's namespace, once delivered
    delivered: tuple[str, ...]
    #: the failure in one line
    error: str | None

    @property
    def label(self) -> str:
        """``name`` if it has one, else ``#id``."""
        return self.name or f"#{self.id}"

    @property
    def elapsed(self) -> float:
        """Seconds it ran (up to this snapshot for a running task)."""
        if self.started is None:
            return 0.0
        return (self.finished or self.started) - self.started
