"""The ttasks_ipy engine: tasks, events, the executor. Imports nothing from IPython.

>>> from ttasks_ipy.core import Executor, TaskSpec, BashRunner
>>> ex = Executor(max_workers=2)
>>> t = ex.submit(TaskSpec(BashRunner("echo hi")))
>>> t.wait(10).result.output
'hi\\n'
"""
from __future__ import annotations

#: every public name and the module it lives in, imported on first use: a worker process
#: (which imports ``ttasks_ipy.core.context``) or a plain script pays only for what it uses
_LAZY = {
    **dict.fromkeys(["Backend", "BackendStats", "Job", "JobEvents", "SyncBackend", "ThreadBackend"], ".backends"),
    **dict.fromkeys(["TaskContext", "current_task", "progress"], ".context"),
    **dict.fromkeys(["CommandFailed", "InvalidTransition", "QueueFull", "SpecError", "TaskCancelled", "TaskError",
                     "TaskFailed", "TaskNotDone", "WaitInsideTask", "WaitTimeout"], ".errors"),
    **dict.fromkeys(["EventBus", "EventKind", "TaskEvent"], ".events"),
    **dict.fromkeys(["ALL_COMPLETED", "FIRST_COMPLETED", "Executor", "ExecutorStats"], ".executor"),
    "check_name": ".names",
    "TaskOutput": ".output",
    "describe_exit": ".procs",
    "TaskRecord": ".records",
    **dict.fromkeys(["BashRunner", "CommandResult"], ".runners.bash"),
    **dict.fromkeys(["CallRunner", "PyBody", "PythonRunner", "bind", "compile_body"], ".runners.python"),
    **dict.fromkeys(["Runner", "TaskSpec"], ".spec"),
    **dict.fromkeys(["TRANSITIONS", "TaskState"], ".states"),
    "Task": ".task",
    **dict.fromkeys(["PromptFailed", "PromptRunner", "PromptSettings"], ".runners.prompt"),
    "WorkerPool": ".backends.process.pool",
    "ProcessBackend": ".backends.process.backend",
    **dict.fromkeys(["PortablePython", "check_picklable"], ".runners.portable"),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
