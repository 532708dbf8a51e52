"""``Ledger``: the SQLite file of one user's tasks, read and written in short transactions.

Each kernel registers itself (``register_kernel``) with its session (the
notebook it belongs to), its pid and that pid's start time; a task whose
kernel is no longer alive and that was not detached reads as ``lost``. Rows
are written by one ``LedgerWriter`` per kernel, in batches (``write``); every
read is one query on an index. Output files live beside the database, in
``<name>.output/<kernel>-<task>/``, private to the user like the file itself.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..proctable import start_time
from .schema import connect, private_folder

#: the states in which a task may still run
ACTIVE_STATES = ("pending", "queued", "running")

#: the columns a writer fills, in order (``id`` is the ledger's own)
COLUMNS = (
    "kid", "session", "tid", "name", "graph", "kind", "description", "state", "status", "reason", "error",
    "attempt", "retries", "created", "started", "finished", "backend", "place", "delivered",
    "stdout_tail", "stderr_tail", "stdout_chars", "stderr_chars", "output_note", "folder",
    "result", "result_names", "result_note", "target", "detached", "pid", "pid_start", "updated",
)
#: columns a later write of the same task leaves alone when it has nothing for them (None)
_KEEP_IF_NULL = ("stdout_tail", "stderr_tail", "stdout_chars", "stderr_chars", "output_note", "folder", "result",
                 "result_names", "result_note", "target", "pid", "pid_start", "graph", "name")
_UPSERT = (
    f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (kid, tid) DO UPDATE SET "
    + ", ".join(
        f"{c} = coalesce(excluded.{c}, {c})" if c in _KEEP_IF_NULL else f"{c} = excluded.{c}"
        for c in COLUMNS if c not in ("kid", "tid", "session", "detached")
    )
)
_LIST = ("id, kid, session, tid, name, graph, kind, description, state, status, reason, error, attempt, "
         "created, started, finished, backend, place, delivered, stdout_chars, stderr_chars, output_note, folder, "
         "result_names, result_note, detached, pid, pid_start, (result IS NOT NULL) AS has_result, target")


class Entry(NamedTuple):
    """One task as the ledger knows it (``status`` reads ``lost`` for a task whose kernel died)."""

    id: int
    kid: str
    session: str
    tid: int
    name: str | None
    graph: str | None
    kind: str
    description: str
    state: str
    status: str
    reason: str | None
    error: str | None
    attempt: int
    created: float
    started: float | None
    finished: float | None
    backend: str | None
    place: str | None
    delivered: tuple[str, ...]
    stdout_chars: int | None
    stderr_chars: int | None
    output_note: str | None
    #: the folder holding the whole output (stdout.txt, stderr.txt; a detached task's exit file)
    folder: str | None
    result_names: tuple[str, ...]
    result_note: str | None
    detached: bool
    pid: int | None
    pid_start: int | None
    has_result: bool
    #: the name its value goes into (``-o``), if any
    target: str | None

    @property
    def label(self) -> str:
        """``graph.name``, ``name``, or ``#tid`` for an unnamed task."""
        base = self.name or f"#{self.tid}"
        return f"{self.graph}.{base}" if self.graph and self.name else base

    @property
    def active(self) -> bool:
        """Whether it was still going when last written (and is not lost)."""
        return self.state in ACTIVE_STATES and self.status != "lost"


def _entry(row: Sequence[Any]) -> Entry:
    r = list(row)
    r[18] = tuple(json.loads(r[18])) if r[18] else ()
    r[23] = tuple(json.loads(r[23])) if r[23] else ()
    r[25] = bool(r[25])
    r[28] = bool(r[28])
    return Entry(*r)


class Ledger:
    """One user's ledger file. Thread-safe: one connection, used under a lock, one short transaction a call."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 2.0,
                 max_pages: int | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = connect(self.path, busy_timeout=busy_timeout, max_pages=max_pages)
        self._alive: dict[str, tuple[float, bool]] = {}

    # ---- files --------------------------------------------------------
    @property
    def output_root(self) -> Path:
        """The folder of the tasks' output files."""
        return self.path.with_name(self.path.name + ".output")

    def output_folder(self, kid: str, tid: int, *, create: bool = False) -> Path:
        """Where the output of task ``tid`` of kernel ``kid`` is kept (made private on ``create``)."""
        folder = self.output_root / f"{kid}-{tid}"
        if create:
            private_folder(self.output_root)
            private_folder(folder)
        return folder

    # ---- writing ------------------------------------------------------
    def _run(self, fn: Any) -> Any:
        with self._lock:
            con = self._con
            if con is None:
                raise sqlite3.ProgrammingError("the ledger is closed")
            con.execute("BEGIN IMMEDIATE")
            try:
                out = fn(con)
                con.execute("COMMIT")
                return out
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def register_kernel(self, kid: str, session: str, pid: int, pid_start: int | None) -> None:
        """Note a kernel (its tasks read ``lost`` once this pid with this start time is gone)."""
        self._run(lambda con: con.execute(
            "INSERT OR REPLACE INTO kernels (kid, session, pid, pid_start, started) VALUES (?, ?, ?, ?, ?)",
            (kid, session, pid, pid_start, time.time())))

    def write_graphs(self, graphs: Iterable[tuple[str, str, str, str, str, float]]) -> None:
        """Keep graph runs' cells: (name, session, kid, first line, cell, time) each."""
        rows = list(graphs)
        if rows:
            self._run(lambda con: con.executemany(
                "INSERT INTO graphs (name, session, kid, line, cell, created) VALUES (?, ?, ?, ?, ?, ?)", rows))

    def graph_cell(self, name: str, session: str | None = None) -> tuple[str, str] | None:
        """The first line and body of the latest run of graph ``name`` (of ``session`` first)."""
        for scope in ([session] if session is not None else []) + [None]:
            sql = "SELECT line, cell FROM graphs WHERE name = ?"
            args: list[Any] = [name]
            if scope is not None:
                sql += " AND session = ?"
                args.append(scope)
            rows = self._q(sql + " ORDER BY created DESC, id DESC LIMIT 1", args)
            if rows:
                return rows[0][0], rows[0][1]
        return None

    def kernel_ended(self, kid: str) -> None:
        """Note that kernel ``kid`` stopped recording (unloaded): its tasks are no longer followed by it."""
        self._run(lambda con: con.execute("UPDATE kernels SET pid = NULL WHERE kid = ?", (kid,)))
        self._alive.pop(kid, None)

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        """Insert or update task rows (values in ``COLUMNS`` order), all in one transaction."""
        rows = list(rows)
        if rows:
            self._run(lambda con: con.executemany(_UPSERT, rows))

    def update(self, entry_id: int, **values: Any) -> None:
        """Set columns of one row (a detached task's end written by the kernel that watched it)."""
        if not values:
            return
        cols = ", ".join(f"{k} = ?" for k in values)
        self._run(lambda con: con.execute(f"UPDATE tasks SET {cols}, updated = ? WHERE id = ?",
                                          (*values.values(), time.time(), entry_id)))

    def claim(self, entry_id: int, old_kid: str, new_kid: str, new_tid: int) -> bool:
        """Make a re-found task belong to kernel ``new_kid`` (as its task ``new_tid``); False if another took it."""
        def go(con: sqlite3.Connection) -> bool:
            cur = con.execute("UPDATE tasks SET kid = ?, tid = ?, updated = ? WHERE id = ? AND kid = ?",
                              (new_kid, new_tid, time.time(), entry_id, old_kid))
            return cur.rowcount == 1

        return bool(self._run(go))

    def forget(self, ids: Iterable[int]) -> int:
        """Remove these rows and their output files; returns how many rows went."""
        ids = list(ids)
        if not ids:
            return 0
        marks = ",".join("?" for _ in ids)

        def go(con: sqlite3.Connection) -> list[tuple[str, int]]:
            found = con.execute(f"SELECT kid, tid FROM tasks WHERE id IN ({marks})", ids).fetchall()
            con.execute(f"DELETE FROM tasks WHERE id IN ({marks})", ids)
            return found

        found = self._run(go)
        for kid, tid in found:
            shutil.rmtree(self.output_folder(kid, tid), ignore_errors=True)
        return len(found)

    def older_than(self, seconds: float) -> list[int]:
        """Ids of finished tasks created more than ``seconds`` ago."""
        cutoff = time.time() - seconds
        with self._lock:
            rows = self._q("SELECT id, state FROM tasks WHERE created < ?", (cutoff,))
        return [i for i, state in rows if state not in ACTIVE_STATES]

    # ---- reading ------------------------------------------------------
    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            if self._con is None:
                raise sqlite3.ProgrammingError("the ledger is closed")
            return self._con.execute(sql, args).fetchall()

    def kernel_alive(self, kid: str) -> bool:
        """Whether kernel ``kid`` still runs (its pid alive with the start time it registered)."""
        now = time.monotonic()
        cached = self._alive.get(kid)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        rows = self._q("SELECT pid, pid_start FROM kernels WHERE kid = ?", (kid,))
        alive = bool(rows) and rows[0][0] is not None and start_time(rows[0][0]) == rows[0][1]
        self._alive[kid] = (now, alive)
        return alive

    def _fix(self, e: Entry) -> Entry:
        if e.state in ACTIVE_STATES and not e.detached and not self.kernel_alive(e.kid):
            return e._replace(status="lost")
        return e

    def history(self, limit: int = 20, session: str | None = None) -> list[Entry]:
        """The latest ``limit`` tasks, newest first (of ``session`` if given)."""
        if session is None:
            rows = self._q(f"SELECT {_LIST} FROM tasks ORDER BY created DESC, id DESC LIMIT ?", (limit,))
        else:
            rows = self._q(f"SELECT {_LIST} FROM tasks WHERE session = ? ORDER BY created DESC, id DESC LIMIT ?",
                           (session, limit))
        return [self._fix(_entry(r)) for r in rows]

    def count(self, session: str | None = None) -> int:
        """How many tasks are recorded (of ``session`` if given)."""
        if session is None:
            return self._q("SELECT count(*) FROM tasks")[0][0]
        return self._q("SELECT count(*) FROM tasks WHERE session = ?", (session,))[0][0]

    def get(self, entry_id: int) -> Entry | None:
        """The row with ledger id ``entry_id``."""
        rows = self._q(f"SELECT {_LIST} FROM tasks WHERE id = ?", (entry_id,))
        return self._fix(_entry(rows[0])) if rows else None

    def entry_of(self, kid: str, tid: int) -> Entry | None:
        """The row of task ``tid`` of kernel ``kid``."""
        rows = self._q(f"SELECT {_LIST} FROM tasks WHERE kid = ? AND tid = ?", (kid, tid))
        return self._fix(_entry(rows[0])) if rows else None

    def find(self, key: str, session: str | None = None) -> Entry | None:
        """The latest task named ``key`` (``graph.task`` too; of ``session`` first), or the row with id ``key``,
        else the latest task that kept a value under the name ``key``."""
        k = key.lstrip("#")
        if k.isascii() and k.isdigit():
            return self.get(int(k))
        graph, dot, name = key.partition(".")
        where, args = ("graph = ? AND name = ?", [graph, name]) if dot else ("name = ?", [key])
        for scope in ([session] if session is not None else []) + [None]:
            sql = f"SELECT {_LIST} FROM tasks WHERE {where}"
            a = list(args)
            if scope is not None:
                sql += " AND session = ?"
                a.append(scope)
            rows = self._q(sql + " ORDER BY created DESC, id DESC LIMIT 1", a)
            if rows:
                return self._fix(_entry(rows[0]))
        if not dot and key.isidentifier():  # a name a task delivered: the task that last kept it
            pattern = f'%"{key}"%'
            for scope in ([session] if session is not None else []) + [None]:
                sql = f"SELECT {_LIST} FROM tasks WHERE result_names LIKE ?"
                a = [pattern]
                if scope is not None:
                    sql += " AND session = ?"
                    a.append(scope)
                rows = self._q(sql + " ORDER BY created DESC, id DESC LIMIT 1", a)
                if rows:
                    return self._fix(_entry(rows[0]))
        return None

    def graph_entries(self, graph: str, session: str | None = None) -> list[Entry]:
        """The tasks of the latest run of graph ``graph`` (by the kernel that ran it last), in order."""
        sql = f"SELECT kid FROM tasks WHERE graph = ?{' AND session = ?' if session else ''} " \
              "ORDER BY created DESC LIMIT 1"
        rows = self._q(sql, (graph, session) if session else (graph,))
        if not rows:
            return []
        got = self._q(f"SELECT {_LIST} FROM tasks WHERE graph = ? AND kid = ? ORDER BY tid", (graph, rows[0][0]))
        latest: dict[str | None, Entry] = {}
        for r in got:  # a rerun's tasks are new tasks: keep each node's latest
            e = self._fix(_entry(r))
            latest[e.name] = e
        return list(latest.values())

    def result_blob(self, entry_id: int) -> bytes | None:
        """The serialised result of a row, if one was kept."""
        rows = self._q("SELECT result FROM tasks WHERE id = ?", (entry_id,))
        return rows[0][0] if rows else None

    def tails(self, entry_id: int) -> tuple[str, str]:
        """The stdout and stderr tails kept in the database."""
        rows = self._q("SELECT stdout_tail, stderr_tail FROM tasks WHERE id = ?", (entry_id,))
        return (rows[0][0] or "", rows[0][1] or "") if rows else ("", "")

    def detached_to_refind(self, session: str, me: str) -> list[Entry]:
        """Detached tasks of ``session`` that no running kernel watches (still running, or ended unseen)."""
        rows = self._q(f"SELECT {_LIST} FROM tasks WHERE detached = 1 AND session = ? AND kid != ? "
                       "AND state IN ('pending', 'queued', 'running') ORDER BY id", (session, me))
        return [e for e in map(_entry, rows) if not self.kernel_alive(e.kid)]

    # ---- ending -------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except sqlite3.Error:
                pass


__all__ = ["ACTIVE_STATES", "COLUMNS", "Entry", "Ledger"]
