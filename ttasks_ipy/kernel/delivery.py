"""Delivery: finished results wait in an inbox and are written into ``user_ns`` on the main thread.

The one writer of ``user_ns``. ``Inbox.put`` may be called from any thread
(it is an event subscriber); ``Delivery.drain`` runs on the main thread only:
at cell boundaries (``post_run_cell``), when the kernel is idle (a callback on
the kernel's loop, skipped while a cell runs — ``await``ing cells included),
and inside an explicit wait. A name reassigned since dispatch is not
overwritten unless configured.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import Task, TaskState
from ..views import notices
from .dispatch import MISSING, Dispatch, Dispatches


@dataclass
class Item:
    """One thing to hand over: a finished task, or a service that became ready."""

    kind: str  # 'final' | 'ready' | 'graph'
    task: Any  # a Task, or a GraphRun for 'graph'



class Inbox:
    """Thread-safe queue of items waiting for the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[Item] = collections.deque()

    def put(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)

    def take(self, only: set[int] | None = None) -> list[Item]:
        """Remove and return the items (only those of task ids in ``only`` if given)."""
        with self._lock:
            if only is None:
                items, self._items = list(self._items), collections.deque()
                return items
            keep: collections.deque[Item] = collections.deque()
            taken = []
            for it in self._items:
                mine = it.kind != "graph" and it.task.id in only
                (taken if mine else keep).append(it)
            self._items = keep
            return taken

    def finished(self) -> list[Any]:
        """The finished tasks whose items wait here (not yet delivered)."""
        with self._lock:
            return [it.task for it in self._items if it.kind == "final"]

    def __len__(self) -> int:
        return len(self._items)


def values_to_deliver(task: Task, d: Dispatch) -> dict[str, Any]:
    """The names and values a finished task hands over, as its dispatch says."""
    out = d.out
    if d.keeps_failed_result:
        if out and task.has_value:
            return {out: task.value}
        return {}
    if task.state is not TaskState.SUCCEEDED:
        return {}
    if out:
        return {out: task.value}
    if d.expression:
        return {}
    value = task.value
    names = d.names
    if isinstance(value, dict):
        if names:
            return {n: value[n] for n in names if n in value}
        return dict(value)
    return {}


def _dispatch_order(item: Item) -> tuple[bool, int]:
    """Tasks by id (the order they were dispatched in); graphs' notices after them."""
    return (item.kind == "graph", item.task.id if item.kind != "graph" else 0)


class Delivery:
    """Writes inbox items into ``user_ns`` and reports them through ``show``.

    ``show(task, notice, at_boundary)`` says the :class:`~ttasks_ipy.views.notices.Notice`
    (at a cell boundary) or updates the task's own display (kernel idle).
    """

    def __init__(
        self,
        user_ns: dict[str, Any],
        inbox: Inbox,
        show: Callable[[Any, notices.Notice, bool], None],
        dispatches: Dispatches,
        *,
        overwrite: Callable[[], bool],
    ) -> None:
        self.user_ns = user_ns
        self.dispatches = dispatches
        self.inbox = inbox
        self.show = show
        self.overwrite = overwrite
        self.cell_running = False
        #: the value delivery itself last wrote under each name (not a user's reassignment)
        self._ours: dict[str, Any] = {}

    def drain(self, *, at_boundary: bool, only: set[int] | None = None) -> list[Task]:
        """Deliver what waits (main thread only); returns the tasks delivered."""
        done = []
        # in dispatch order, whatever order they ended in (a notebook's notices are then deterministic)
        for item in sorted(self.inbox.take(only), key=_dispatch_order):
            task = item.task
            if item.kind == "ready":
                d = self.dispatches.get(task)
                self.show(task, notices.ready_notice(task, quiet=bool(d and d.quiet)), at_boundary)
                continue
            if item.kind == "graph":  # one notice for a whole graph
                self.show(task, notices.graph_notice(task), at_boundary)
                continue
            d = self.dispatches.get(task)
            if d is None:
                continue
            delivered, kept = self._write(task, d)
            task.note_delivered(tuple(delivered))
            d.not_delivered = tuple(kept)
            d.handed = True
            if d.graph:
                done.append(task)  # delivered; the graph's own notice speaks for it
                continue
            self.show(task, notices.task_notice(task, delivered, kept, d.facts(), quiet=d.quiet), at_boundary)
            done.append(task)
        return done

    def _write(self, task: Task, d: Dispatch) -> tuple[list[str], list[str]]:
        values = values_to_deliver(task, d)
        before = d.targets
        delivered, kept = [], []
        for name, value in values.items():
            old = before.get(name, MISSING)
            now = self.user_ns.get(name, MISSING)
            if now is value:  # already the very object it would deliver: nothing was reassigned
                delivered.append(name)
                continue
            if now is not old and now is not self._ours.get(name, MISSING) and not self.overwrite():
                kept.append(name)
                continue
            self.user_ns[name] = value
            self._ours[name] = value
            delivered.append(name)
        return delivered, kept
