"""The one exceptions module of the engine.

Hierarchy::

    TaskError                       root of everything the engine raises
     ├── InvalidTransition          a state change the table does not allow (names task and states)
     ├── SpecError (ValueError)     a task description that cannot run (bad option, empty body)
     ├── QueueFull                  the executor refuses work (``queue_policy='reject'``, service limit)
     ├── TaskNotDone                ``result`` read before the task finished
     ├── TaskFailed                 ``result`` of a task that failed; ``.task`` names it
     │    ├── CommandFailed         a command exited non-zero; carries its ``CommandResult``
     │    └── PromptFailed          an LLM request failed; keeps the ``partial`` text (core/llm/errors.py)
     ├── TaskCancelled              ``result`` of a cancelled task; raised inside a cancelled task
     ├── WorkerDied                 a worker process died under its task (core/backends/process/pool.py)
     ├── ResultError                a worker's result cannot come back (core/backends/process/pool.py)
     ├── RemoteError                a worker's exception cannot be rebuilt here (core/backends/process/pool.py)
     ├── WaitTimeout (TimeoutError) a bounded wait ran out
     └── WaitInsideTask             a task tried to wait for tasks (it could hold the last slot)

Errors of libraries underneath are translated at one boundary with ``raise ... from``.
"""
from __future__ import annotations

from typing import Any


class TaskError(Exception):
    """Root of every error the engine raises."""


class InvalidTransition(TaskError, RuntimeError):
    """A state change the transition table does not allow."""


class SpecError(TaskError, ValueError):
    """A task description that cannot run."""


class QueueFull(TaskError):
    """The executor refuses new work."""


class TaskNotDone(TaskError):
    """The task has not finished yet."""


class TaskFailed(TaskError):
    """The task failed; ``task`` is the task, ``__cause__`` the original error if any."""

    def __init__(self, message: str, task: Any = None) -> None:
        super().__init__(message)
        self.task = task


class CommandFailed(TaskFailed):
    """A command exited with a non-zero status; ``result`` keeps its output."""

    def __init__(self, message: str, result: Any, task: Any = None) -> None:
        super().__init__(message, task)
        self.result = result


class TaskCancelled(TaskError):
    """The task was cancelled (raised inside the task's code when it checks)."""


class WaitTimeout(TaskError, TimeoutError):
    """A bounded wait ran out before the tasks finished."""


class WaitInsideTask(TaskError):
    """Waiting for tasks from inside a task is refused: it could deadlock the last slot."""
