"""``TaskFacts``: what the kernel layer tells views about a task beyond its own state."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskFacts:
    """Where a task's value goes and how it was dispatched (empty for a task started elsewhere)."""

    #: the name its value is delivered into (``-o r``)
    out: str | None = None
    #: True when the task has a value to show rather than names to deliver
    expression: bool = False
    #: True when every slot was busy at dispatch
    queued_at_start: bool = False


NO_FACTS = TaskFacts()
#: how a view asks for a task's facts
FactsOf = Callable[[Any], TaskFacts]


def no_facts(task: Any) -> TaskFacts:
    """The ``FactsOf`` of views that are told nothing."""
    return NO_FACTS
