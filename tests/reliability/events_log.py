"""An event log for reliability tests: every event of an executor's bus, checked for the engine's invariants."""
from __future__ import annotations

import collections
import threading
from typing import Any

from ttasks_ipy.core import EventKind, Executor, TaskEvent

_STATE_EVENTS = {EventKind.STARTED, EventKind.RETRYING, EventKind.QUEUED}


class EventLog:
    """Subscribes to ``ex.bus`` and records, per task, the kinds in the order the subscriber saw them.

    ``peak`` is the most tasks seen running at one moment: STARTED adds one,
    the terminal event (or RETRYING) of a started attempt takes it away.
    """

    def __init__(self, ex: Executor) -> None:
        self._lock = threading.Lock()
        self.kinds: dict[int, list[EventKind]] = collections.defaultdict(list)
        self.running: set[int] = set()
        self.peak = 0
        self.too_many: list[str] = []
        self.cap = ex.max_workers
        self.unsubscribe = ex.bus.subscribe(self._on, [k for k in EventKind if k is not EventKind.OUTPUT])

    def _on(self, ev: TaskEvent) -> None:
        tid = ev.task.id
        with self._lock:
            self.kinds[tid].append(ev.kind)
            if ev.kind is EventKind.STARTED:
                self.running.add(tid)
                if len(self.running) > self.peak:
                    self.peak = len(self.running)
                if len(self.running) > self.cap:
                    self.too_many.append(f"{sorted(self.running)} after STARTED of #{tid}")
            elif ev.kind.terminal or ev.kind is EventKind.RETRYING:
                self.running.discard(tid)

    def problems(self, tasks: list[Any]) -> list[str]:
        """What broke the invariants: terminal events per task, STARTED after the end, state vs event."""
        out = []
        with self._lock:
            for t in tasks:
                kinds = self.kinds.get(t.id, [])
                ends = [i for i, k in enumerate(kinds) if k.terminal]
                if len(ends) != 1:
                    out.append(f"{t.label}: {len(ends)} terminal events: {[k.value for k in kinds]}")
                    continue
                if any(k is EventKind.STARTED for k in kinds[ends[0]:]):
                    out.append(f"{t.label}: STARTED after its end: {[k.value for k in kinds]}")
                if kinds[ends[0]].value != t.state.value:
                    out.append(f"{t.label}: state {t.state.value} but terminal event {kinds[ends[0]].value}")
                if ends[0] != len(kinds) - 1:
                    out.append(f"{t.label}: events after its end: {[k.value for k in kinds]}")
        return out

    def check_cap(self, counts: str) -> None:
        """Fail if the events ever showed more than the cap running (a slot goes to the next task only
        after the end of the one that held it was published)."""
        assert not self.too_many, f"events showed more than {self.cap} running: {self.too_many[:3]} ({counts})"

    def count(self, kind: EventKind) -> int:
        """How many events of ``kind`` were seen."""
        with self._lock:
            return sum(ks.count(kind) for ks in self.kinds.values())
