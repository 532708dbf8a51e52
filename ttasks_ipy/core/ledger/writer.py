"""``LedgerWriter``: the background subscriber that records a kernel's tasks in the ledger.

On the publishing thread it only appends the event to a deque (no lock, no
I/O): a task never waits for the database. A thread of its own wakes a few
times a second, keeps the latest event of each task, and writes them all in
one short transaction; at a task's end it also keeps a tail of its output in
the row, the whole output (up to ``file_cap``) in a file beside the database,
and the values it hands over (``extras``) when they serialise within
``result_cap``.

When the file cannot be written (locked past the busy timeout, read-only,
full, not a database) tasks run on: one warning says what happened
(``on_warning``), the unwritten rows wait (the latest per task, bounded), and
writing resumes by itself once it can. A file that is not a database is moved
aside (``<name>.corrupt-<time>``), never overwritten, and a new one is begun.
A file written by a newer version is refused (``NewerLedger``) and left alone.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..events import EventBus, EventKind, TaskEvent
from .results import pack
from .schema import LedgerError, NewerLedger
from .store import Entry, Ledger

if TYPE_CHECKING:
    from ..task import Task

log = logging.getLogger("ttasks_ipy")

#: every kind but OUTPUT (output is read from the task at its end)
_KINDS = tuple(k for k in EventKind if k is not EventKind.OUTPUT)
#: characters of each stream kept in the row itself
TAIL_CHARS = 4_000
#: rows kept while the file cannot be written; beyond, the oldest finished are dropped
MAX_WAITING = 100_000


class Extras(NamedTuple):
    """What the kernel side knows of a task that its record does not say."""

    #: the graph it belongs to, and its name there
    graph: str | None = None
    node: str | None = None
    #: the names and values it hands over (kept as its result when they serialise)
    values: Mapping[str, Any] | None = None
    #: the name its value goes into (``-o``)
    target: str | None = None


ExtrasFn = Callable[["Task"], Extras]


def _problem(e: BaseException) -> str:
    """A short word for what went wrong with the file: locked, read-only, full, corrupt, or the error."""
    text = str(e).lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if "readonly" in text or "read-only" in text or "permission" in text:
        return "read-only"
    if "full" in text or "no space" in text:
        return "full"
    if isinstance(e, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text
                                                 or "corrupt" in text):
        return "corrupt"
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return f"{type(e).__name__}: {e}"


_SAYS = {
    "locked": "is locked by another program",
    "read-only": "is read-only",
    "full": "is full (no room left)",
    "corrupt": "is not a readable database",
}


class LedgerWriter:
    """Records the tasks published on ``bus`` in the ledger at ``path``, in the background.

    ``kid`` names this kernel, ``session`` what it belongs to (a notebook's
    path). ``extras(task)`` is called on the writer's thread when a task ends.
    ``on_warning(line)`` is called once per problem (from the writer's thread);
    writing resumes quietly.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        bus: EventBus,
        *,
        kid: str,
        session: str,
        pid: int | None = None,
        pid_start: int | None = None,
        extras: ExtrasFn | None = None,
        result_cap: int = 10 << 20,
        file_cap: int = 100 << 20,
        interval: float = 0.25,
        busy_timeout: float = 2.0,
        max_pages: int | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.kid = kid
        self.session = session
        self.result_cap = result_cap
        self.file_cap = file_cap
        self.interval = interval
        self._pid = os.getpid() if pid is None else pid
        self._pid_start = pid_start
        self._extras = extras
        self._busy = busy_timeout
        self._max_pages = max_pages
        self._on_warning = on_warning
        self._events: collections.deque[TaskEvent] = collections.deque()
        self._graphs: collections.deque[tuple[str, str, str, str, str, float]] = collections.deque()
        self._waiting: dict[int, list[Any]] = {}  # task id -> its row not yet written
        self._adopted: dict[int, Entry] = {}  # task id -> the ledger row it continues (a re-found task)
        self._problem: str | None = None
        self.refused: str | None = None
        self._ledger: Ledger | None = None
        self._registered = False
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._rounds = 0
        self._closed = False
        self._open()
        self._unsubscribe = bus.subscribe(self._events.append, _KINDS)
        self._thread = threading.Thread(target=self._loop, name="ttasks-ledger", daemon=True)
        self._thread.start()

    # ---- the file -------------------------------------------------------
    @property
    def ledger(self) -> Ledger | None:
        """The open ledger, or None while it cannot be opened."""
        return self._ledger

    def _open(self) -> Ledger | None:
        if self._ledger is not None or self.refused:
            return self._ledger
        try:
            self._ledger = Ledger(self.path, busy_timeout=self._busy, max_pages=self._max_pages)
        except NewerLedger as e:
            self.refused = str(e)
            self._warn(f"[bg] ledger: {e}")
            return None
        except (sqlite3.Error, OSError) as e:
            self._trouble(e)
            return None
        self._register()
        return self._ledger

    def _register(self) -> None:
        """Note this kernel in the file (before any of its rows: other kernels tell its tasks' liveness by it)."""
        if self._registered or self._ledger is None:
            return
        from ..proctable import start_time

        start = self._pid_start if self._pid_start is not None else start_time(self._pid)
        try:
            self._ledger.register_kernel(self.kid, self.session, self._pid, start)
            self._registered = True
        except (sqlite3.Error, OSError) as e:
            self._trouble(e)

    def _trouble(self, e: BaseException) -> None:
        kind = _problem(e)
        if kind == "corrupt":
            self._move_aside()
            return
        if self._problem != kind:
            self._problem = kind
            says = _SAYS.get(kind, f"cannot be written ({kind})")
            self._warn(f"[bg] ledger {self.path} {says}: tasks run on; their history is written when it can be")

    def _move_aside(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                try:
                    os.replace(src, aside.with_name(aside.name + suffix))
                except OSError as e:
                    self._problem = "corrupt"
                    self._warn(f"[bg] ledger {self.path} is not a readable database and cannot be moved aside "
                               f"({e.strerror}): tasks run on without a history")
                    return
        self._registered = False
        self._warn(f"[bg] ledger {self.path} was not a readable database: moved aside to {aside.name}; "
                   "a new ledger is begun (tasks run on)")
        self._open()

    def _warn(self, line: str) -> None:
        log.debug(line)
        if self._on_warning is not None:
            try:
                self._on_warning(line)
            except Exception:
                log.debug("ledger warning callback failed", exc_info=True)

    # ---- re-found tasks -------------------------------------------------
    def adopt(self, task: Task, entry: Entry) -> None:
        """Make ``task`` continue ledger row ``entry`` (a detached task found again); call before it runs."""
        self._adopted[task.id] = entry

    def record_graph(self, name: str, line: str, cell: str) -> None:
        """Keep a graph run's cell as typed (written with the next round), so that it can be rerun later."""
        self._graphs.append((name, self.session, self.kid, line, cell, time.time()))

    def touch(self, task: Task) -> None:
        """Write ``task``'s current record soon, though no event changed it (a detached task's pid)."""
        self._events.append(TaskEvent(EventKind.PROGRESS, task, task.attempt, time.time(), record=task.record()))

    # ---- the writer's thread --------------------------------------------
    def _loop(self) -> None:
        delay = self.interval
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            closing = self._closed
            ok = self._round()
            delay = self.interval if ok else min(max(delay * 2, 0.5), 5.0)
            with self._written:
                self._rounds += 1
                self._written.notify_all()
            if closing:
                return

    def _round(self) -> bool:
        """Take the new events, write what waits; False when the file could not be written."""
        events = self._events
        latest: dict[int, TaskEvent] = {}
        while events:  # only each task's latest event is written (what it says supersedes the others)
            ev = events.popleft()
            runner = ev.task.spec.runner
            if ev.kind.terminal and getattr(runner, "released", False) and getattr(runner, "pid", None):
                continue  # a detached command let go of, not ended: its last row stands (a later kernel follows it)
            latest[ev.task.id] = ev
        for tid, ev in latest.items():
            if not ev.kind.terminal and ev.task.state.terminal and not getattr(ev.task.spec.runner, "released", False):
                continue  # it has ended since: its end's event is on its way and says all this row would
            try:
                self._waiting[tid] = self._row(ev)
            except Exception:
                log.exception("ledger: cannot record task %s", ev.task.label)
        if not self._waiting and not self._graphs:
            return True
        ledger = self._open()
        if ledger is None:
            self._bound()
            return False
        try:
            if not self._registered:
                self._register()
                if not self._registered:
                    self._bound()
                    return False
            for tid, entry in list(self._adopted.items()):
                if entry.kid != self.kid:  # claimed at load: this kernel's row from now on
                    self._adopted[tid] = entry._replace(kid=self.kid)
            ledger.write(list(self._waiting.values()))
            if self._graphs:
                graphs = list(self._graphs)
                ledger.write_graphs(graphs)
                for _ in graphs:
                    self._graphs.popleft()
        except (sqlite3.Error, OSError) as e:
            self._trouble(e)
            self._bound()
            return False
        self._waiting.clear()
        if self._problem is not None:
            log.debug("ledger %s is written again (after: %s)", self.path, self._problem)
            self._problem = None
        return True

    def _bound(self) -> None:
        if len(self._waiting) > MAX_WAITING:
            for tid in list(self._waiting)[: len(self._waiting) - MAX_WAITING]:
                del self._waiting[tid]

    def _row(self, ev: TaskEvent) -> list[Any]:
        task = ev.task
        rec = ev.record or task.record()
        terminal = rec.state.terminal
        runner = task.spec.runner
        now = time.time()
        adopted = self._adopted.get(task.id)
        name, graph, target = rec.name, None, None
        out: dict[str, Any] = {}
        if terminal:
            extras = self._call_extras(task)
            graph, target = extras.graph, extras.target
            name = extras.node or name
            out.update(self._output(task))
            if extras.values:
                blob, names, note = pack(extras.values, self.result_cap)
                out.update(result=blob, result_names=json.dumps(names) if names else None, result_note=note)
        elif self._extras is not None:
            extras = self._call_extras(task)
            graph, name, target = extras.graph, extras.node or name, extras.target
        detached = getattr(runner, "detached", False)
        created, started = rec.created, rec.started
        if adopted is not None:
            created, started = adopted.created, adopted.started or started
        return [
            self.kid, self.session, task.id, name, graph, rec.kind, rec.description, rec.state.value, rec.status,
            rec.reason, rec.error, rec.attempt, rec.retries, created, started, rec.finished, rec.backend, rec.where,
            json.dumps(rec.delivered) if rec.delivered else None,
            out.get("stdout_tail"), out.get("stderr_tail"), out.get("stdout_chars"), out.get("stderr_chars"),
            out.get("output_note"), out.get("folder") or getattr(runner, "folder", None),
            out.get("result"), out.get("result_names"), out.get("result_note"), target,
            1 if detached else 0, getattr(runner, "pid", None), getattr(runner, "pid_start", None), now,
        ]

    def _call_extras(self, task: Task) -> Extras:
        if self._extras is None:
            return Extras()
        try:
            return self._extras(task)
        except Exception:
            log.debug("ledger extras failed for %s", task.label, exc_info=True)
            return Extras()

    def _output(self, task: Task) -> dict[str, Any]:
        """The tails for the row, and the whole output copied beside the database (capped)."""
        buf = task.output_buffer
        counts = {s: buf.total_chars(s) for s in ("stdout", "stderr")}
        if not any(counts.values()):
            return {}
        got: dict[str, Any] = {"stdout_chars": counts["stdout"], "stderr_chars": counts["stderr"]}
        if getattr(task.spec.runner, "detached", False):  # its output went straight to the ledger's files
            for s in ("stdout", "stderr"):
                got[f"{s}_tail"] = buf.tail(s)[-TAIL_CHARS:]
            return got
        ledger = self._ledger
        folder = ledger.output_folder(self.kid, task.id, create=True) if ledger is not None else None
        notes = []
        for s in ("stdout", "stderr"):
            if not counts[s]:
                continue
            text = buf.read(s)
            got[f"{s}_tail"] = text[-TAIL_CHARS:]
            if folder is None:
                continue
            piece = text[: self.file_cap] if self.file_cap else ""
            try:
                fd = os.open(folder / f"{s}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8", errors="replace", newline="") as f:
                    f.write(piece)
            except OSError as e:
                notes.append(f"{s}: file not written ({e.strerror})")
                continue
            if len(piece) < len(text) or not buf.complete:
                notes.append(f"{s}: kept {len(piece):,} of {counts[s]:,} characters")
        if folder is not None:
            got["folder"] = str(folder)
        if notes:
            got["output_note"] = "; ".join(notes)
        return got

    # ---- waiting and ending ---------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Write what waits now; True once a round that began after this call is over (bounded)."""
        if self._closed or not self._thread.is_alive():
            return False
        with self._written:
            target = self._rounds + 2  # the round under way may have begun before this call
            self._wake.set()
            deadline = time.monotonic() + timeout
            while self._rounds < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._written.wait(left)
                self._wake.set()
        return not self._waiting and not self._graphs

    def close(self, timeout: float = 5.0) -> None:
        """Stop recording: write what waits (bounded by ``timeout``), then close the file."""
        if self._closed:
            return
        self._unsubscribe()
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._ledger is not None:
            if self._registered:
                try:  # its detached commands may be followed by the next load, even in this very process
                    self._ledger.kernel_ended(self.kid)
                except (sqlite3.Error, OSError):
                    pass
            self._ledger.close()
            self._ledger = None

    @property
    def problem(self) -> str | None:
        """What keeps the ledger from being written now ('locked', 'read-only', 'full', ...), or None."""
        return self.refused and "refused" or self._problem


__all__ = ["Extras", "ExtrasFn", "LedgerError", "LedgerWriter", "TAIL_CHARS"]
