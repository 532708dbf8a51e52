"""Task states and the one table of allowed transitions.

A task is PENDING while it waits for other tasks, QUEUED while it waits for a
worker slot (or for its retry backoff), RUNNING while an attempt runs, and ends
in exactly one terminal state. BLOCKED is terminal: a dependency did not
succeed, so the task never started. ``reset`` (a graph rerun) is the only way
out of a terminal state.
"""
from __future__ import annotations

import enum


class TaskState(str, enum.Enum):
    """Where a task is in its life."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"

    @property
    def terminal(self) -> bool:
        """True for the states a task ends in."""
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """True while the task may still run."""
        return self not in TERMINAL

    def __str__(self) -> str:
        return self.value


#: the reason of a cancel a person asked for (``%bg --cancel``, a card's Cancel, ``h.cancel()``)
USER_CANCEL = "cancelled by user"

TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.BLOCKED})

#: state -> the states it may change to
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.QUEUED, TaskState.CANCELLED, TaskState.BLOCKED}),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.BLOCKED}),
    # RUNNING -> QUEUED is a retry after a failed attempt
    TaskState.RUNNING: frozenset(
        {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.QUEUED}
    ),
    TaskState.SUCCEEDED: frozenset({TaskState.PENDING}),
    TaskState.FAILED: frozenset({TaskState.PENDING}),
    TaskState.CANCELLED: frozenset({TaskState.PENDING}),
    TaskState.BLOCKED: frozenset({TaskState.PENDING}),
}


def can_change(old: TaskState, new: TaskState) -> bool:
    """Whether the table allows ``old`` -> ``new``."""
    return new in TRANSITIONS[old]
