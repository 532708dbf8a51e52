"""Task events and the bus that fans them out.

Events are the only channel from a running task to the rest of the system:
views, the inbox that feeds delivery, and any other subscriber. Publishing
costs one loop over the subscribers, whatever the number of tasks.
"""
from __future__ import annotations

import enum
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .records import TaskRecord
    from .task import Task

log = logging.getLogger("ttasks_ipy")


class EventKind(str, enum.Enum):
    """What happened to a task."""

    PENDING = "pending"
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    OUTPUT = "output"
    STALLED = "stalled"
    READY = "ready"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"

    @property
    def terminal(self) -> bool:
        """True for the events that end a task."""
        return self in _TERMINAL_KINDS


_TERMINAL_KINDS = frozenset(
    {EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED, EventKind.BLOCKED}
)


_NO_DATA: Mapping[str, Any] = MappingProxyType({})


class TaskEvent(NamedTuple):
    """One thing that happened to one task.

    ``record`` is the task's snapshot at that moment (what views and a ledger
    read); ``task`` is the live handle, for subscribers in the kernel's own
    process that hand results over. ``data`` holds what the kind needs:
    ``stream``/``text`` for OUTPUT, ``percent``/``message`` for PROGRESS,
    ``stalled`` for STALLED, ``line`` for READY, ``delay``/``reason`` for
    RETRYING, ``reason`` for terminal kinds.
    """

    kind: EventKind
    task: Task
    attempt: int
    time: float = 0.0
    data: Mapping[str, Any] = _NO_DATA
    record: TaskRecord | None = None


Subscriber = Callable[[TaskEvent], None]


class EventBus:
    """Fans events out to subscribers, each isolated from the others.

    A subscriber runs on the publishing thread and must return quickly; one
    that raises is logged and skipped. A subscriber that may be slow is
    subscribed with ``background=True``: it then runs on its own thread behind
    a bounded queue and never delays the task (when that queue is full, OUTPUT
    events are dropped for it and counted, other events are kept).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[tuple[Subscriber, frozenset[EventKind] | None], ...] = ()
        self._workers: list[_BackgroundSubscriber] = []

    def subscribe(
        self,
        fn: Subscriber,
        kinds: Iterable[EventKind] | None = None,
        *,
        background: bool = False,
    ) -> Callable[[], None]:
        """Call ``fn`` for every event (of ``kinds`` if given); returns the unsubscribe function."""
        target: Subscriber = fn
        worker = None
        if background:
            worker = _BackgroundSubscriber(fn)
            target = worker.put
        entry = (target, frozenset(kinds) if kinds is not None else None)
        with self._lock:
            self._subs = (*self._subs, entry)
            if worker:
                self._workers.append(worker)

        def unsubscribe() -> None:
            with self._lock:
                self._subs = tuple(s for s in self._subs if s is not entry)
                if worker in self._workers:
                    self._workers.remove(worker)
            if worker:
                worker.close()

        return unsubscribe

    def publish(self, event: TaskEvent) -> None:
        """Hand ``event`` to every subscriber; never raises."""
        for fn, kinds in self._subs:  # a tuple snapshot: no lock on the hot path
            if kinds is not None and event.kind not in kinds:
                continue
            try:
                fn(event)
            except Exception:  # a broken subscriber must not harm the task
                log.exception("event subscriber %r failed on %s", fn, event.kind)

    def close(self) -> None:
        """Stop background subscribers and forget everyone."""
        with self._lock:
            workers, self._workers, self._subs = self._workers, [], ()
        for w in workers:
            w.close()


class _BackgroundSubscriber:
    """Runs one subscriber on its own thread behind a bounded queue."""

    _STOP = object()

    def __init__(self, fn: Subscriber, maxsize: int = 10_000) -> None:
        self.fn = fn
        self.dropped = 0
        self._q: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._loop, name="ttasks-subscriber", daemon=True)
        self._thread.start()

    def put(self, event: TaskEvent) -> None:
        try:
            self._q.put_nowait(event)
        except queue.Full:
            if event.kind is EventKind.OUTPUT:
                self.dropped += 1
            else:
                self._q.put(event, timeout=1.0)

    def _loop(self) -> None:
        while True:
            ev = self._q.get()
            if ev is self._STOP:
                return
            try:
                self.fn(ev)
            except Exception:
                log.exception("background subscriber %r failed", self.fn)

    def close(self) -> None:
        try:
            self._q.put(self._STOP, timeout=1.0)
        except queue.Full:
            pass
