"""The ledger's SQLite file: opening it privately, its pragmas, its schema and forward migrations.

The schema version is SQLite's ``user_version``. ``MIGRATIONS[i]`` brings a
file from version ``i`` to ``i + 1``; a new file runs them all. A file whose
version is newer than ``SCHEMA_VERSION`` was written by a newer ttasks_ipy: it
is refused with ``NewerLedger`` before anything is written to it.

Connections use WAL (readers never block the writer), a busy timeout, and
``synchronous=NORMAL`` (durable at each checkpoint, enough for a history).
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import TaskError

#: the version this code writes; bump it and append to ``MIGRATIONS`` to change the schema
SCHEMA_VERSION = 2

_V1 = """
CREATE TABLE kernels (
    kid TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
    started REAL NOT NULL
);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kid TEXT NOT NULL,
    session TEXT NOT NULL,
    tid INTEGER NOT NULL,
    name TEXT,
    graph TEXT,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    backend TEXT,
    place TEXT,
    delivered TEXT,
    stdout_tail TEXT,
    stderr_tail TEXT,
    stdout_chars INTEGER,
    stderr_chars INTEGER,
    output_note TEXT,
    folder TEXT,
    result BLOB,
    result_names TEXT,
    result_note TEXT,
    target TEXT,
    detached INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    pid_start INTEGER,
    updated REAL NOT NULL,
    UNIQUE (kid, tid)
);
CREATE INDEX tasks_by_created ON tasks (created);
CREATE INDEX tasks_by_session ON tasks (session, created);
CREATE INDEX tasks_by_name ON tasks (name, created);
CREATE INDEX tasks_by_graph ON tasks (graph, created);
CREATE INDEX tasks_detached ON tasks (detached) WHERE detached = 1;
"""

#: version 2: each graph run's cell as typed (its first line and body), so a later kernel can rerun it
_V2 = """
CREATE TABLE graphs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    session TEXT NOT NULL,
    kid TEXT NOT NULL,
    line TEXT NOT NULL,
    cell TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX graphs_by_name ON graphs (name, session, created);
"""

#: ``MIGRATIONS[i]``: the SQL that takes a file from version ``i`` to ``i + 1``
MIGRATIONS: tuple[str, ...] = (_V1, _V2)
assert len(MIGRATIONS) == SCHEMA_VERSION


class LedgerError(TaskError):
    """The ledger cannot be used (its file, its schema, its owner)."""


class NewerLedger(LedgerError):
    """The file was written by a newer version: it is left as it is."""


def private_folder(folder: Path) -> None:
    """Create ``folder`` (and parents) if needed; it is made 0700 when it is ours to change."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if folder.stat().st_uid == os.getuid():
            os.chmod(folder, 0o700)
    except OSError:
        pass


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (so SQLite never creates it world-readable)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect(path: Path, *, busy_timeout: float = 2.0, max_pages: int | None = None) -> sqlite3.Connection:
    """An open, migrated connection to the ledger at ``path`` (created private to the user).

    Raises ``NewerLedger`` for a file of a newer schema (untouched) and lets
    ``sqlite3.Error`` through for a file that is locked, read-only, full or not a
    database (the writer decides what to do about those). ``max_pages`` bounds
    the file's size (``PRAGMA max_page_count``).
    """
    private_folder(path.parent)
    _private_file(path)
    con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise NewerLedger(
                f"the ledger {path} was written by a newer ttasks_ipy (schema {version}, this one reads up to "
                f"{SCHEMA_VERSION}): it is left as it is; upgrade ttasks_ipy, or set TTasks.ledger_path to "
                "another file"
            )
        con.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        if max_pages is not None:
            con.execute(f"PRAGMA max_page_count = {int(max_pages)}")
        if version < SCHEMA_VERSION:
            migrate(con, version)
    except BaseException:
        con.close()
        raise
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        try:
            if side.exists() and side.stat().st_uid == os.getuid():
                os.chmod(side, 0o600)
        except OSError:
            pass
    return con


def migrate(con: sqlite3.Connection, version: int) -> None:
    """Run the migrations after ``version``, each in one transaction with its version bump."""
    for i in range(version, SCHEMA_VERSION):
        con.execute("BEGIN IMMEDIATE")
        try:
            if con.execute("PRAGMA user_version").fetchone()[0] != i:  # another kernel migrated meanwhile
                con.execute("ROLLBACK")
                continue
            for statement in MIGRATIONS[i].split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute(f"PRAGMA user_version = {i + 1}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "LedgerError", "NewerLedger", "connect", "migrate", "private_folder"]
