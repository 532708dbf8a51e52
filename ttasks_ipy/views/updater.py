"""The one place that changes live widgets: ``Updater``.

State, in prose. Views (task cards, the dashboard, graph views) register with
``watch(view, tasks)``. An event on the bus only marks the views of its task
*dirty* (a set add under a lock, on the publishing thread; nothing is queued,
so a task printing 100,000 lines a second costs no memory here). One timer
thread drains the dirty set: a view is *due* when it has not been pushed for
its ``min_interval`` (0.1 s for a card: at most 10 updates a second), and due
views are pushed in order (finished ones first, then the one waiting longest)
while a token bucket allows (``budget`` messages a second across all views,
``burst`` at once). A push renders the view from the task's *latest* state, so
any number of events in between coalesce into one message, and a view stays
dirty until it is pushed: the final state is always sent, at worst a little
later. A view leaves the dirty set when its push begins (events during the
push mark it again) and is *being pushed* until the push ends: ``wait_idle``
waits for both, so when it returns every view shows what its tasks were at
the call. Views whose tasks run are re-rendered about once a second so elapsed
time ticks; a render that changes nothing sends nothing.

The updater imports no widget library: a view is anything with the ``View``
methods. Only the timer thread calls ``push`` once a view is registered.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..core import EventBus, TaskEvent

if TYPE_CHECKING:
    from ..core import Task

log = logging.getLogger("ttasks_ipy")


class View(Protocol):
    """What the updater needs from a live view."""

    #: seconds between two pushes of this view (0.1 = at most 10 a second)
    min_interval: float

    def push(self) -> int:
        """Render the latest state and assign what changed; return how many messages that sent."""

    @property
    def live(self) -> bool:
        """True while a clock on the view ticks (a task of it runs): re-render about once a second."""

    @property
    def final(self) -> bool:
        """True once everything the view shows has finished (its push goes first)."""

    @property
    def closed(self) -> bool:
        """True once the view is gone (its widget closed): the updater forgets it."""


@dataclass(frozen=True)
class UpdaterStats:
    """A snapshot of what the updater did."""

    events: int
    pushes: int
    messages: int
    views: int
    dirty: int
    errors: int
    #: CPU seconds the updater's own thread used (rendering and sending)
    cpu: float


class _Slot:
    """The updater's bookkeeping for one view."""

    __slots__ = ("view", "last_push", "tasks", "everything")

    def __init__(self, view: View) -> None:
        self.view = view
        self.last_push = -1e9
        self.tasks: set[int] = set()
        self.everything = False


class Updater:
    """Pushes view updates at a bounded rate from one timer thread; one per session.

    ``budget`` is the most messages a second across all views, ``burst`` how
    many may go at once after a quiet spell, ``tick`` how often running views
    re-render so their clocks move.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        budget: float = 50.0,
        burst: float = 25.0,
        tick: float = 1.0,
    ) -> None:
        if not budget > 0:
            raise ValueError(f"budget must be a positive number of messages per second, not {budget!r}")
        self.budget = budget
        self.burst = max(1.0, burst)
        self.tick = tick
        self._lock = threading.Lock()
        self._slots: dict[int, _Slot] = {}  # id(view) -> slot
        self._by_task: dict[int, set[int]] = {}  # task id -> ids of the views showing it
        self._everything: set[int] = set()  # views that show every task (the dashboard)
        self._dirty: set[int] = set()
        self._live: set[int] = set()
        self._pushing: int | None = None  # the view being pushed now (taken off the dirty set)
        self._tokens = self.burst
        self._refilled = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: closing: what is dirty goes out now, past intervals and budget (final states must not wait)
        self._flushing = False
        #: set by close(): ends the sleep of a round whose views wait for their interval or the budget
        self._urgent = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._events = self._pushes = self._messages = self._errors = 0
        self._cpu = 0.0
        self._thread: threading.Thread | None = None
        self._bus = bus
        self._unsubscribe = bus.subscribe(self._on_event)

    # ---- registering ---------------------------------------------------
    def watch(self, view: View, tasks: Iterable[Task] | None = None) -> None:
        """Keep ``view`` up to date with ``tasks`` (every task when None); may be called again to add tasks."""
        key = id(view)
        with self._lock:
            if self._stop.is_set():
                return
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot(view)
            if tasks is None:
                slot.everything = True
                self._everything.add(key)
            else:
                for t in tasks:
                    slot.tasks.add(t.id)
                    self._by_task.setdefault(t.id, set()).add(key)
            self._dirty.add(key)
            self._live.add(key)
            self._ensure_thread()
        self._wake.set()

    def narrow(self, view: View) -> None:
        """Stop re-rendering ``view`` for every task: from now on only for the tasks it watches."""
        with self._lock:
            slot = self._slots.get(id(view))
            if slot is not None:
                slot.everything = False
                self._everything.discard(id(view))

    def unwatch(self, view: View) -> None:
        """Forget ``view``."""
        with self._lock:
            self._forget_locked(id(view))

    def refresh(self, task: Task | None = None, view: View | None = None) -> None:
        """Re-render the views of ``task`` (e.g. after its names were delivered), or ``view``, or all."""
        with self._lock:
            if view is not None:
                if id(view) in self._slots:
                    self._dirty.add(id(view))
            elif task is not None:
                self._dirty.update(self._by_task.get(task.id, ()))
                self._dirty.update(self._everything)
            else:
                self._dirty.update(self._slots)
        self._wake.set()

    # ---- the event side (publishing threads) ---------------------------
    def _on_event(self, event: TaskEvent) -> None:
        with self._lock:
            self._events += 1
            views = self._by_task.get(event.task.id)
            if views:
                self._dirty.update(views)
            if self._everything:
                self._dirty.update(self._everything)
            affected = bool(views) or bool(self._everything)
        if affected and not self._wake.is_set():
            self._wake.set()

    # ---- the timer thread ----------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ttasks-updater", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delay, pending = self._round(time.monotonic())
            except Exception:  # never let the one updater die
                log.exception("ttasks updater round failed")
                delay, pending = 0.5, True
            self._cpu = time.thread_time()
            if pending:
                # views wait for their interval or for the budget: more events cannot make
                # them due sooner, so sleep through them (this is what coalesces a flood)
                self._urgent.wait(delay)
            else:
                self._wake.wait(delay)  # until an event, or the next clock tick

    def _round(self, now: float) -> tuple[float | None, bool]:
        """Push what is due; return how long to sleep (None: until woken) and whether views still wait."""
        self._refill(now)
        with self._lock:
            for key in list(self._live):
                slot = self._slots.get(key)
                if slot is None:
                    self._live.discard(key)
                elif now - slot.last_push >= self.tick:
                    self._dirty.add(key)
            due = [
                slot
                for slot in map(self._slots.get, self._dirty)
                if slot is not None and (self._flushing or slot.last_push + slot.view.min_interval <= now)
            ]
        due.sort(key=lambda s: (not _final(s.view), s.last_push))
        for slot in due:
            if self._tokens < 1 and not self._flushing:
                break  # the budget is spent: the rest stay dirty for the next round
            with self._lock:
                self._dirty.discard(id(slot.view))  # events from now on mark it again
                self._pushing = id(slot.view)  # ... and until the push ends, wait_idle waits for it
            try:
                self._tokens -= self._push(slot, now)
            finally:
                with self._lock:
                    self._pushing = None
                    if not self._dirty:
                        self._idle.notify_all()
        with self._lock:
            for key in list(self._live):
                slot = self._slots.get(key)
                if slot is None or not _live(slot.view):
                    self._live.discard(key)
            # how long until the next view is due (by its interval, the budget, or its clock)
            wait: float | None = None
            for key in self._dirty:
                slot = self._slots.get(key)
                if slot is not None:
                    at = slot.last_push + slot.view.min_interval - now
                    wait = at if wait is None else min(wait, at)
            dirty = wait is not None
            if dirty and self._tokens < 1:
                wait = max(wait or 0.0, (1 - self._tokens) / self.budget)
            if not self._dirty:
                self._idle.notify_all()
            if self._live:
                next_tick = min(self._slots[k].last_push for k in self._live) + self.tick - now
                wait = next_tick if wait is None else min(wait, next_tick)
        return (None if wait is None else max(wait, 0.005)), dirty

    def _push(self, slot: _Slot, now: float) -> int:
        view = slot.view
        key = id(view)
        try:
            if view.closed:
                with self._lock:
                    self._forget_locked(key)
                return 0
            sent = int(view.push() or 0)
        except Exception:
            self._errors += 1
            log.exception("ttasks view %r failed to update", view)
            return 0
        slot.last_push = now
        with self._lock:
            self._pushes += 1
            self._messages += sent
            if _live(view):
                self._live.add(key)
        return sent

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.budget)
        self._refilled = now

    def _forget_locked(self, key: int) -> None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        for tid in slot.tasks:
            views = self._by_task.get(tid)
            if views is not None:
                views.discard(key)
                if not views:
                    del self._by_task[tid]
        self._everything.discard(key)
        self._dirty.discard(key)
        self._live.discard(key)

    # ---- reading and ending --------------------------------------------
    def wait_idle(self, timeout: float) -> bool:
        """Block until no push is in progress and no view waits for one (at most ``timeout`` seconds).

        True if so: every view then shows the state of its tasks as of the
        last event published before the call.
        """
        end = time.monotonic() + timeout
        # called from a push itself (the timer thread), the push in progress is the caller's own
        mine = threading.current_thread() is self._thread
        with self._lock:
            while self._dirty or (self._pushing is not None and not mine):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.1))
            return True

    def statistics(self) -> UpdaterStats:
        """A frozen snapshot of the counts."""
        with self._lock:
            return UpdaterStats(
                events=self._events,
                pushes=self._pushes,
                messages=self._messages,
                views=len(self._slots),
                dirty=len(self._dirty),
                errors=self._errors,
                cpu=self._cpu,
            )

    def close(self, timeout: float = 1.0) -> None:
        """Unsubscribe, push what is still dirty at once (bounded by ``timeout``, not by the budget), stop."""
        self._unsubscribe()
        if self._thread is not None and not self._stop.is_set():
            self._flushing = True
            self._urgent.set()
            self._wake.set()
            self.wait_idle(timeout)
        self._stop.set()
        self._urgent.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._lock:
            self._slots.clear()
            self._by_task.clear()
            self._everything.clear()
            self._dirty.clear()
            self._live.clear()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._stop.is_set()


def _final(view: View) -> bool:
    try:
        return bool(view.final)
    except Exception:
        return False


def _live(view: View) -> bool:
    try:
        return bool(view.live)
    except Exception:
        return False


__all__ = ["Updater", "UpdaterStats", "View"]
