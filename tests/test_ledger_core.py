"""The ledger on its own: real SQLite files written by a real executor's events, and what goes wrong with them."""
from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import threading

import pytest

from ttasks_ipy.core import BashRunner, CallRunner, Executor, TaskSpec
from ttasks_ipy.core.ledger import SCHEMA_VERSION, Extras, Ledger, LedgerWriter, NewerLedger
from ttasks_ipy.core.ledger.results import pack, unpack
from ttasks_ipy.core.ledger.schema import MIGRATIONS


@pytest.fixture
def ex():
    e = Executor(max_workers=4, grace=0.5)
    yield e
    e.shutdown()


class Warnings(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def writer(path, ex, *, kid="k1", session="nb.ipynb", **kw) -> tuple[LedgerWriter, Warnings]:
    said = Warnings()
    kw = {"interval": 0.05, "busy_timeout": 0.2, **kw}
    w = LedgerWriter(path, ex.bus, kid=kid, session=session, on_warning=said, **kw)
    return w, said


def values_of(task):
    if task.ok and task.has_value:
        return Extras(values={"out": task.value})
    return Extras()


def run(ex, *specs, timeout=30):
    tasks = [ex.submit(s) for s in specs]
    ex.wait(tasks, timeout=timeout)
    return tasks


def test_tasks_are_recorded_newest_first_with_output_and_result(tmp_path, ex):
    path = tmp_path / "sub" / "ledger.sqlite"
    w, said = writer(path, ex, extras=values_of)
    a, b, c = run(ex, TaskSpec(CallRunner(lambda: {"k": [1, 2]}), name="first"),
                  TaskSpec(BashRunner("echo out; echo err >&2; exit 3"), name="cmd"),
                  TaskSpec(CallRunner(lambda: 1 / 0), name="bad"))
    assert w.flush(10)
    rows = w.ledger.history(10, session="nb.ipynb")
    assert [r.name for r in rows] == ["bad", "cmd", "first"]
    bad, cmd, first = rows
    assert (first.status, cmd.status, bad.status) == ("succeeded", "failed", "failed")
    assert cmd.reason == "exit status 3" and bad.error.startswith("ZeroDivisionError")
    assert unpack(w.ledger.result_blob(first.id)) == {"out": {"k": [1, 2]}}
    assert first.result_names == ("out",)
    assert w.ledger.tails(cmd.id) == ("out\n", "err\n")
    assert (path.parent / "ledger.sqlite.output").is_dir()
    assert open(os.path.join(cmd.folder, "stdout.txt")).read() == "out\n"
    assert said == []
    w.close()
    # private to the user: the file, its folders, the output files
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cmd.folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(cmd.folder, "stdout.txt")).st_mode) == 0o600


def test_what_cannot_be_kept_is_said():
    lock = threading.Lock()
    blob, names, note = pack({"ok": 1, "lock": lock, "big": b"x" * 5000}, cap=1000)
    assert names == ("ok",)
    assert unpack(blob) == {"ok": 1}
    assert "lock (cannot be serialised: TypeError)" in note
    assert "big (4.9 kB, over ledger_result_cap of 1000 B)" in note
    assert pack({"lock": lock}, cap=1000)[:2] == (None, ())


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path, ex):
    path = tmp_path / "ledger.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE future (x)")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = path.read_bytes()
    newer = SCHEMA_VERSION + 1
    with pytest.raises(NewerLedger, match=rf"written by a newer ttasks_ipy \(schema {newer}.*left as it is"):
        Ledger(path)
    w, said = writer(path, ex)
    run(ex, TaskSpec(CallRunner(lambda: 1)))
    w.flush(5)
    w.close()
    assert len(said) == 1 and "newer ttasks_ipy" in said[0]
    assert path.read_bytes() == before


def test_an_older_ledger_is_migrated_forward_keeping_its_rows(tmp_path):
    path = tmp_path / "ledger.sqlite"
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(MIGRATIONS[0])  # a file written when the schema was version 1
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO tasks (kid, session, tid, name, kind, description, state, status, created, updated) "
                "VALUES ('k', 's', 1, 'old', 'bash', '!true', 'succeeded', 'succeeded', 1.0, 1.0)")
    con.close()
    ledger = Ledger(path)
    assert [e.name for e in ledger.history()] == ["old"]
    ledger.write_graphs([("g", "s", "k", "g", "a: x = 1", 2.0)])
    assert ledger.graph_cell("g", "s") == ("g", "a: x = 1")
    ledger.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_locked_ledger_leaves_tasks_running_warns_once_and_catches_up(tmp_path, ex):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    w, said = writer(path, ex)
    tasks = run(ex, *[TaskSpec(CallRunner(lambda: 1)) for _ in range(5)])
    assert all(t.ok for t in tasks)  # they never waited for the file
    assert not w.flush(2) or w.problem == "locked"
    run(ex, TaskSpec(CallRunner(lambda: 2)))
    w.flush(2)
    assert len(said) == 1 and "is locked" in said[0], said
    holder.execute("ROLLBACK")
    holder.close()
    assert w.flush(15)
    assert w.ledger.count() == 6
    assert len(said) == 1
    w.close()


def test_a_full_ledger_leaves_tasks_running_and_warns_once(tmp_path, ex):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    w, said = writer(path, ex, max_pages=pages + 1)
    tasks = run(ex, *[TaskSpec(BashRunner(f"head -c 3000 /dev/zero | tr '\\0' {i}")) for i in range(8)])
    assert all(t.ok for t in tasks)
    w.flush(5)
    run(ex, TaskSpec(BashRunner("echo more")))
    w.flush(5)
    assert len(said) == 1 and "is full" in said[0], said
    w.close()


def test_a_corrupt_ledger_is_moved_aside_and_a_new_one_begun(tmp_path, ex):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not a database, " * 200)
    w, said = writer(path, ex)
    tasks = run(ex, TaskSpec(CallRunner(lambda: 1), name="after"))
    assert tasks[0].ok
    assert w.flush(5)
    assert [r.name for r in w.ledger.history()] == ["after"]
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert len(said) == 1 and "moved aside" in said[0]
    w.close()


def _immutable(path, on: bool) -> bool:
    if os.getuid() != 0:
        os.chmod(path, 0o400 if on else 0o600)
        return True
    r = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return r.returncode == 0


def test_a_read_only_ledger_leaves_tasks_running_and_warns_once(tmp_path, ex):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    if not _immutable(path, True):
        pytest.skip("cannot make a file read-only here (chattr)")
    try:
        w, said = writer(path, ex)
        tasks = run(ex, *[TaskSpec(CallRunner(lambda: 1)) for _ in range(3)])
        assert all(t.ok for t in tasks)
        w.flush(5)
        run(ex, TaskSpec(CallRunner(lambda: 1)))
        w.flush(5)
        assert len(said) == 1 and ("read-only" in said[0] or "cannot be written" in said[0]), said
        w.close()
    finally:
        _immutable(path, False)


def test_two_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "ledger.sqlite"
    exs = [Executor(max_workers=4), Executor(max_workers=4)]
    try:
        ws = [writer(path, e, kid=f"k{i}", interval=0.01, busy_timeout=5)[0] for i, e in enumerate(exs)]
        batches = [[e.submit(TaskSpec(CallRunner(lambda: None))) for _ in range(300)] for e in exs]
        for e, b in zip(exs, batches, strict=True):
            e.wait(b, timeout=60)
        for w in ws:
            assert w.flush(20)
        assert ws[0].ledger.count() == 600
        assert {r.status for r in ws[0].ledger.history(600)} == {"succeeded"}
        for w in ws:
            w.close()
    finally:
        for e in exs:
            e.shutdown()
