"""What the kernel layer keeps about each task it dispatched: where its result goes, and how it is shown.

A ``Dispatch`` is made by the magic (or ``bg()``, or a graph) that started the
task, and kept by the session beside the task (the engine's ``TaskSpec`` holds
none of it). Delivery reads it to know which names to write and whether the
user reassigned them since; views read its ``facts()``.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from ..core import Task
from ..views.facts import TaskFacts

#: what a target name held at dispatch when it held nothing
MISSING: Any = object()


@dataclass
class Dispatch:
    """One dispatched task, as the kernel layer sees it."""

    #: the name its value (an expression's, a command's result, a prompt's text) goes into
    out: str | None = None
    #: True when the task has a value rather than names to deliver (an expression, ``bg(fn)``)
    expression: bool = False
    #: True for commands and prompts: their result is delivered with ``-o`` even when they failed
    keeps_failed_result: bool = False
    #: for Python statements: only these of the assigned names (``%%bg --names``)
    names: tuple[str, ...] | None = None
    #: what each target name held at dispatch (to tell whether the user reassigned it since)
    targets: dict[str, Any] = field(default_factory=dict)
    #: the graph the task belongs to (its notice is the graph's), and the task's name in it
    graph: str | None = None
    node: str | None = None
    #: True when all slots were busy at dispatch (the start line says "queued")
    queued_at_start: bool = False
    #: dispatched with ``--quiet``: no start line, and no notice when it goes well
    quiet: bool = False
    #: names not written because the user had reassigned them
    not_delivered: tuple[str, ...] = ()
    #: True once its end was handed over (delivered and reported) on the main thread
    handed: bool = False

    def facts(self) -> TaskFacts:
        """What views may show of it."""
        return TaskFacts(out=self.out, expression=self.expression, queued_at_start=self.queued_at_start)

    def remember_targets(self, names: list[str], user_ns: dict[str, Any]) -> Dispatch:
        """Note what each of ``names`` holds now; returns self."""
        self.targets = {n: user_ns.get(n, MISSING) for n in names}
        return self


class Dispatches:
    """The ``Dispatch`` of each live task of a session (forgotten with the task)."""

    def __init__(self) -> None:
        self._by_task: weakref.WeakKeyDictionary[Task, Dispatch] = weakref.WeakKeyDictionary()

    def add(self, task: Task, dispatch: Dispatch) -> None:
        self._by_task[task] = dispatch

    def get(self, task: Any) -> Dispatch | None:
        """The task's dispatch, or None for a task this session did not start."""
        try:
            return self._by_task.get(task)
        except TypeError:  # not weak-referenceable: not a task
            return None

    def facts(self, task: Any) -> TaskFacts:
        """The task's facts for views (empty ones for a task this session did not start)."""
        d = self.get(task)
        return d.facts() if d is not None else TaskFacts()

    def __contains__(self, task: object) -> bool:
        return self.get(task) is not None
