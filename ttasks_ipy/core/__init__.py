"""The ttasks_ipy engine: tasks, events, the executor. Imports nothing from IPython.

>>> from ttasks_ipy.core import Executor, TaskSpec, BashRunner
>>> ex = Executor(max_workers=2)
>>> t = ex.submit(TaskSpec(BashRunner("echo hi")))
>>> t.wait(10).result.output
'hi\\n'
"""
from __future__ import annotations

from .backends import Backend, SyncBackend, ThreadBackend
from .context import RunContext, current_task, progress
from .errors import (
    CommandFailed,
    InvalidTransition,
    QueueFull,
    SpecError,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskNotDone,
    WaitInsideTask,
    WaitTimeout,
)
from .events import EventBus, EventKind, TaskEvent
from .executor import ALL_COMPLETED, FIRST_COMPLETED, Executor, ExecutorStats
from .output import TaskOutput
from .runners.bash import BashRunner, CommandResult, describe_exit
from .runners.python import CallRunner, PyBody, PythonRunner, bind, compile_body
from .spec import Runner, TaskSpec
from .states import TRANSITIONS, TaskState
from .task import Task

#: names imported on first use, so that a worker process or a plain script does not pay for httpx
_LAZY = {
    "PromptFailed": ".runners.prompt",
    "PromptRunner": ".runners.prompt",
    "PromptSettings": ".runners.prompt",
    "WorkerPool": ".backends.process.pool",
    "ProcessRunner": ".backends.process.pool",
    "check_picklable": ".backends.process.pool",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "Backend",
    "BashRunner",
    "CallRunner",
    "CommandFailed",
    "CommandResult",
    "EventBus",
    "EventKind",
    "Executor",
    "ExecutorStats",
    "InvalidTransition",
    "ProcessRunner",
    "PromptFailed",
    "PromptRunner",
    "PromptSettings",
    "PyBody",
    "PythonRunner",
    "QueueFull",
    "RunContext",
    "Runner",
    "SpecError",
    "SyncBackend",
    "TRANSITIONS",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskNotDone",
    "TaskOutput",
    "TaskSpec",
    "TaskState",
    "ThreadBackend",
    "WaitInsideTask",
    "WorkerPool",
    "WaitTimeout",
    "bind",
    "check_picklable",
    "compile_body",
    "current_task",
    "describe_exit",
    "progress",
]
