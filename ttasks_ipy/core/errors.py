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
     ├── WorkerDied                 a worker process died under its task (``before_job``: before it got it)
 ├── BackendUnavailable         where tasks would run cannot be reached (a Dask scheduler, dask not installed)
     ├── ResultError                a task's result cannot come back from where it ran
     ├── RemoteError                an exception raised elsewhere that cannot be rebuilt here
     ├── WaitTimeout (TimeoutError) a bounded wait ran out
     └── WaitInsideTask             a task tried to wait for tasks (it could hold the last slot)

``RemoteTraceback`` (not an engine error) is the ``__cause__`` of an exception
re-raised from another process: its text is the traceback there.

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


class WorkerDied(TaskError):
    """The worker process ended while running the task (killed from outside, crashed, failed to start).

    ``before_job`` is True when it ended before the job reached it.
    """

    def __init__(self, message: str, before_job: bool = False) -> None:
        super().__init__(message)
        self.before_job = before_job


class BackendUnavailable(TaskError):
    """The backend a task asks for cannot be reached or set up (nothing was started)."""


class ResultError(TaskError):
    """The task's result cannot be sent back from where it ran (or loaded in the kernel)."""


class RemoteError(TaskError):
    """An exception raised by the task elsewhere that cannot be rebuilt in the kernel.

    ``str()`` is ``'ZeroDivisionError: division by zero'`` style; ``type_name``
    names the remote type, ``remote_traceback`` is the traceback text.
    """

    def __init__(self, message: str, type_name: str, remote_traceback: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class RemoteTraceback(Exception):
    """The ``__cause__`` of a re-raised remote exception: its ``str`` is the traceback text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "in the worker process:\n" + self.text.rstrip("\n")
