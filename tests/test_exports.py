"""The public surface of the engine, pinned; and the engine imports nothing from IPython."""
from __future__ import annotations

import subprocess
import sys

import ttasks_ipy
import ttasks_ipy.core as core

CORE = {
    "ALL_COMPLETED", "Backend", "BackendStats", "BashRunner", "CallRunner", "CommandFailed", "CommandResult",
    "EventBus", "EventKind", "Executor", "ExecutorStats", "FIRST_COMPLETED", "InvalidTransition", "Job",
    "JobEvents", "PortablePython", "ProcessBackend", "PromptFailed", "PromptRunner", "PromptSettings", "PyBody",
    "PythonRunner", "QueueFull", "Runner", "SpecError", "SyncBackend", "TRANSITIONS", "Task", "TaskCancelled",
    "TaskContext", "TaskError", "TaskEvent", "TaskFailed", "TaskNotDone", "TaskOutput", "TaskRecord", "TaskSpec",
    "TaskState", "ThreadBackend", "WaitInsideTask", "WaitTimeout", "WorkerPool", "bind", "check_name",
    "check_picklable", "compile_body", "current_task", "describe_exit", "progress",
}


def test_core_exports_are_pinned():
    assert set(core.__all__) == CORE
    for name in CORE:
        assert getattr(core, name) is not None, name


def test_top_level_exports():
    assert set(ttasks_ipy.__all__) == {
        "bg", "current_task", "load_ipython_extension", "progress", "task", "unload_ipython_extension", "wait_any",
    }


def test_core_imports_no_ipython_and_no_widgets():
    code = (
        "import sys, ttasks_ipy.core, ttasks_ipy.core.graph, ttasks_ipy.core.backends.process.pool\n"
        "import ttasks_ipy.core.runners.prompt\n"
        "bad = [m for m in ('IPython', 'ipykernel', 'ipywidgets') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
