"""The ttasks_ipy engine: tasks, events, the executor. Imports nothing from IPython.

>>> from ttasks_ipy.core import Executor, TaskSpec, BashRunner
>>> ex = Executor(max_workers=2)
>>> t = ex.submit(TaskSpec(BashRunner("echo hi")))
>>> t.wait(10).result.output
'hi\\n'
"""
from __future__ import annotations

from .backends import Backend, BackendStats, Job, JobEvents, SyncBackend, ThreadBackend
from .context import TaskContext, current_task, progress
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
from .names import check_name
from .output import TaskOutput
from .procs import describe_exit
from .records import TaskRecord
from .runners.bash import BashRunner, CommandResult
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
    "ProcessBackend": ".backends.process.backend",
    "PortablePython": ".runners.portable",
    "check_picklable": ".runners.portable",
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
    "BackendStats",
    "BashRunner",
    "CallRunner",
    "CommandFailed",
    "CommandResult",
    "EventBus",
    "EventKind",
    "Executor",
    "ExecutorStats",
    "InvalidTransition",
    "Job",
    "JobEvents",
    "PortablePython",
    "ProcessBackend",
    "PromptFailed",
    "PromptRunner",
    "PromptSettings",
    "PyBody",
    "PythonRunner",
    "QueueFull",
    "Runner",
    "SpecError",
    "SyncBackend",
    "TRANSITIONS",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskNotDone",
    "TaskOutput",
    "TaskRecord",
    "TaskSpec",
    "TaskState",
    "ThreadBackend",
    "WaitInsideTask",
    "WorkerPool",
    "WaitTimeout",
    "bind",
    "check_name",
    "check_picklable",
    "compile_body",
    "current_task",
    "describe_exit",
    "progress",
]
