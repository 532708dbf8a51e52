"""Notices of things that ended, and the one line that groups them at a cell boundary.

Each finished task, graph or ready service gives one :class:`Notice`: its full
line (shown when it is alone) and the few facts a grouped line needs. When
several land at the same boundary, :func:`group_line` says them all in one
line, in the order given (dispatch order)::

    [bg] ✓ 30 finished → w0 … w29 · ✗ 2 failed: a, b (%bg --log a)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import Task, TaskState
from . import text
from .facts import NO_FACTS, TaskFacts
from .style import shorten

#: how a notice's thing ended, in the order a grouped line says them
OUTCOMES = ("finished", "failed", "cancelled", "never ran", "ready")
_MARK = {"finished": "✓", "failed": "✗", "cancelled": "⊘", "never ran": "⊘", "ready": "▶"}
_STATE_OUTCOME = {
    TaskState.SUCCEEDED: "finished",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.BLOCKED: "never ran",
}
#: how much of a failure's reason a grouped line keeps
_REASON_WIDTH = 60
#: a list of names longer than this is shown as its first and last
_LIST_MAX = 5


@dataclass(frozen=True)
class Notice:
    """What one ended thing (a task, a graph run, a service now ready) has to say."""

    #: the whole one-line notice, as shown when nothing else ends at the same boundary
    line: str
    #: one of :data:`OUTCOMES`
    outcome: str
    #: how a grouped line names it: ``fit``, ``#3``, ``graph build``
    label: str
    #: the names delivered into the namespace
    delivered: tuple[str, ...] = ()
    #: names not delivered because the user reassigned them
    kept: tuple[str, ...] = ()
    #: where the values of ``kept`` are (``the value: ttasks_ipy.task('fit').result``)
    kept_where: str = ""
    #: a short reason (a failure's error, a cancel's cause)
    reason: str = ""
    #: the task was dispatched with ``--quiet``: nothing to say when it went well
    quiet: bool = False
    #: what ``%bg --log`` takes to show it (a task's or graph's name or ``#id``)
    log_key: str = ""

    @property
    def silent(self) -> bool:
        """True when there is nothing to announce (a quiet task that went well)."""
        return self.quiet and self.outcome in ("finished", "ready")


def task_notice(task: Task, delivered: Iterable[str] = (), kept: Iterable[str] = (),
                facts: TaskFacts = NO_FACTS, *, quiet: bool = False) -> Notice:
    """The notice of a finished task."""
    delivered, kept = tuple(delivered), tuple(kept)
    outcome = _STATE_OUTCOME.get(task.state, "finished")
    reason = (task.error or task.reason or "") if outcome != "finished" else ""
    where = text.kept_where(task, list(kept), facts) if kept else ""
    return Notice(text.notice(task, delivered, kept, facts), outcome, task.label, delivered, kept, where,
                  shorten(reason, _REASON_WIDTH), quiet, task.label)


def graph_notice(graph: Any) -> Notice:
    """The notice of a finished run of a graph."""
    delivered = tuple(n for t in graph.tasks.values() for n in t.delivered)
    reason = shorten(graph.error or "", _REASON_WIDTH) if not graph.ok else ""
    return Notice(text.graph_notice(graph), "finished" if graph.ok else "failed", f"graph {graph.name}",
                  delivered, reason=reason, log_key=graph.name)


def ready_notice(task: Task, *, quiet: bool = False) -> Notice:
    """The notice of a service that became ready."""
    return Notice(text.ready_line(task), "ready", task.label, quiet=quiet, log_key=task.label)


def group_line(notices: Sequence[Notice]) -> str | None:
    """One line for everything in ``notices`` (in the order given); None when nothing is to be said.

    A single notice is its own full line; several are grouped by how they
    ended, each group naming its members, with where to look for failures.
    """
    said = [n for n in notices if not n.silent]
    if not said:
        return None
    if len(said) == 1:
        return said[0].line
    parts = []
    for outcome in OUTCOMES:
        group = [n for n in said if n.outcome == outcome]
        if group:
            parts.append(_part(outcome, group))
    for n in said:
        if n.kept:
            parts.append(f"not delivered: {', '.join(n.kept)} of {n.label} (reassigned since dispatch; {n.kept_where})")
    return "[bg] " + " · ".join(parts)


def _part(outcome: str, group: list[Notice]) -> str:
    mark = _MARK[outcome]
    if len(group) == 1:  # one of its kind: name it, and say why it went wrong
        n = group[0]
        if n.reason.startswith(outcome + " "):  # 'cancelled by user'
            part = f"{mark} {n.label} {n.reason}"
        else:
            part = f"{mark} {n.label} {outcome}"
            if n.reason and outcome in ("failed", "cancelled"):
                part += f": {n.reason}"
    else:
        part = f"{mark} {len(group)} {outcome}"
        quiet_about = [n.label for n in group if not n.delivered]
        if outcome != "finished" or quiet_about:
            part += ": " + _names(quiet_about if outcome == "finished" else [n.label for n in group])
    delivered = [d for n in group for d in n.delivered]
    if delivered:
        part += " → " + _names(delivered)
    if outcome == "failed":
        part += f" (%bg --log {group[0].log_key})"
    return part


def _names(names: list[str]) -> str:
    if len(names) <= _LIST_MAX:
        return ", ".join(names)
    return f"{names[0]} … {names[-1]}"


__all__ = ["OUTCOMES", "Notice", "graph_notice", "group_line", "ready_notice", "task_notice"]
