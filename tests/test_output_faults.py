"""Output file trouble never fails a task: a full disk, a file-size limit, the folder removed mid-run.

Each fault is real: a 64 KiB tmpfs mounted for the test (needs root; skipped
otherwise) gives ENOSPC, ``RLIMIT_FSIZE`` in a subprocess gives EFBIG, and the
folder is removed with ``shutil.rmtree`` while the task runs. The task must
succeed, reads must fall back to the tail kept in memory, ``output.lost`` must
say what happened, one warning must be logged, and no thread may die.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import start_kernel, stop_kernel
from helpers import wait_until

from ttasks_ipy.core import BashRunner, CallRunner, Executor, TaskOutput, TaskSpec

pytestmark = pytest.mark.timeout(120)

BIG = 300_000  # far more than the 64 KiB disk and than the 64 Ki-character tail
TAIL = 65_536


# ---- fixtures --------------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                       capture_output=True, timeout=10)
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB filesystem of its own (tmpfs), unmounted afterwards."""
    where = tmp_path / "disk"
    if not _mount_tmpfs(where, "64k"):
        pytest.skip("mounting a tmpfs needs root (and mount)")
    yield where
    _umount(where)


@pytest.fixture
def thread_deaths(monkeypatch):
    """Every exception that ends a thread (what would print 'Exception in thread ...')."""
    died: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: died.append(f"{a.thread.name}: {a.exc_type.__name__}"))
    return died


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="ttasks_ipy")
    return lambda: [m for m in (r.getMessage() for r in caplog.records if r.name == "ttasks_ipy") if "task output" in m]


def fill(path: Path) -> None:
    """Write to ``path`` until the disk is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


# ---- a full disk ---------------------------------------------------------------
def test_disk_full_keeps_the_tail_and_says_so_once(small_disk, thread_deaths, warnings):
    ex = Executor(max_workers=2, output_dir=small_disk)
    try:
        big = ex.submit(TaskSpec(BashRunner(f"head -c {BIG} /dev/zero | tr '\\0' x; echo; echo end"))).wait(20)
        assert big.status == "succeeded", big.error
        out = big.output
        assert len(out) == TAIL and out.endswith("x\nend\n")
        lost = big.output_buffer.lost
        assert lost == f"output file (stdout): No space left on device; kept the last {TAIL:,} characters in memory"
        assert big.output_buffer.complete is False
        assert len(warnings()) == 1 and "No space left on device" in warnings()[0]
        big.output  # noqa: B018 - a second read says nothing more
        assert len(warnings()) == 1

        # the next tasks meet a full disk from their first byte
        nxt = ex.submit(TaskSpec(BashRunner("echo next; echo oops >&2"))).wait(20)
        assert nxt.status == "succeeded" and nxt.output == "next\n" and nxt.stderr == "oops\n"
        assert nxt.output_buffer.complete is True  # nothing lost: all of it fits in the tail
        assert nxt.output_buffer.lost.endswith("kept the last 65,536 characters in memory")

        def chatty() -> int:
            for i in range(20_000):
                print(f"line {i}")
            return 7

        py = ex.submit(TaskSpec(CallRunner(chatty))).wait(20)
        assert py.result == 7 and py.output.endswith("line 19999\n") and len(py.output) == TAIL
    finally:
        ex.shutdown()
    assert thread_deaths == []


def test_disk_already_full_before_the_task_starts(small_disk, thread_deaths, warnings):
    fill(small_disk / "filler")
    ex = Executor(max_workers=2, output_dir=small_disk)
    try:
        t = ex.submit(TaskSpec(BashRunner("seq 1 3"))).wait(20)
        assert t.status == "succeeded" and t.output == "1\n2\n3\n"
        assert t.output_buffer.lost is not None and t.output_buffer.complete
    finally:
        ex.shutdown()
    assert thread_deaths == []


def test_clear_starts_a_new_file_and_forgets_the_loss(small_disk):
    fill(small_disk / "filler")
    out = TaskOutput(small_disk / "1", tail_chars=100)
    out.append("stdout", "a" * 10_000)
    out.close()
    assert out.lost is not None and out.read() == "a" * 100 and not out.complete
    (small_disk / "filler").unlink()
    out.clear()
    assert out.lost is None
    out.append("stdout", "fresh")
    out.close()
    assert out.read() == "fresh" and (small_disk / "1" / "stdout.txt").read_text() == "fresh"


# ---- a file-size limit (EFBIG), without root ------------------------------------
LIMITED = r"""
import json, resource, signal, sys, threading
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
died = []
threading.excepthook = lambda a: died.append(a.exc_type.__name__)
from ttasks_ipy.core import CallRunner, Executor, TaskSpec
ex = Executor(max_workers=1, output_dir=sys.argv[1])
def work():
    for i in range(30000):
        print(f"line {i}")
    return "ok"
t = ex.submit(TaskSpec(CallRunner(work))).wait(30)
out = t.output
print(json.dumps({"status": t.status, "value": t.result, "chars": len(out), "last": out[-11:], "stderr": t.stderr,
                  "lost": t.output_buffer.lost, "complete": t.output_buffer.complete, "died": died}))
ex.shutdown()
"""


def test_file_size_limit_is_not_a_failure(tmp_path):
    r = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["status"] == "succeeded" and got["value"] == "ok" and got["died"] == []
    assert got["chars"] == TAIL and got["last"] == "line 29999\n"
    assert got["lost"].startswith("output file (stdout): File too large;") and got["complete"] is False
    assert "Traceback" not in r.stderr + got["stderr"]
    # the one warning: logging's last resort prints it to sys.stderr, which in a Python task is the task's own
    assert got["stderr"].count("File too large") == 1
    assert (tmp_path / "1" / "stdout.txt").stat().st_size <= 16384


# ---- the folder removed --------------------------------------------------------------
@pytest.mark.parametrize("what", ["task folder", "output folder"])
def test_folder_removed_mid_run(tmp_path, thread_deaths, warnings, what):
    (tmp_path / "out").mkdir()
    ex = Executor(max_workers=2, output_dir=tmp_path / "out")
    gate = threading.Event()

    def work() -> int:
        print("before")
        gate.wait(10)
        print("after")
        return 1

    try:
        t = ex.submit(TaskSpec(CallRunner(work)))
        wait_until(lambda: "before\n" in t.output_buffer.tail(), 10, "the first line")
        shutil.rmtree(t.output_buffer.path if what == "task folder" else ex.output_dir)
        assert t.output == "before\n"  # read while it runs: from memory now
        assert "No such file or directory" in t.output_buffer.lost
        gate.set()
        t.wait(10)
        assert t.status == "succeeded" and t.output == "before\nafter\n" and t.output_buffer.complete
        assert len(warnings()) == 1
        again = ex.submit(TaskSpec(BashRunner("echo again"))).wait(10)  # a later task makes its folder anew
        assert again.output == "again\n" and again.output_buffer.lost is None
    finally:
        gate.set()
        ex.shutdown()
    assert thread_deaths == []


def test_folder_removed_after_the_end(tmp_path, warnings):
    ex = Executor(max_workers=1, output_dir=tmp_path)
    try:
        t = ex.submit(TaskSpec(BashRunner("seq 1 5"))).wait(10)
        shutil.rmtree(t.output_buffer.path)
        assert t.output == "1\n2\n3\n4\n5\n" and t.stderr == ""
        assert t.output_buffer.lost.startswith("output file (stdout): No such file or directory")
        assert len(warnings()) == 1
    finally:
        ex.shutdown()


def test_a_file_where_the_folder_should_be(tmp_path, warnings):
    (tmp_path / "blocked").write_text("not a folder")
    out = TaskOutput(tmp_path / "blocked" / "7", tail_chars=10)
    out.append("stdout", "hello")
    out.append("stdout", " world")
    assert out.read() == "ello world" and not out.complete
    assert out.lost.startswith("output file (stdout): Not a directory")
    out.close()
    assert len(warnings()) == 1


# ---- from a kernel --------------------------------------------------------------------
def test_full_disk_and_removed_folder_from_a_kernel(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("mounting a tmpfs needs root (and mount)")
    k = start_kernel(env={"TMPDIR": str(disk)})  # the session's output folder is made there
    try:
        out_dir = k.value("str(__import__('ttasks_ipy').kernel.session().executor.output_dir)").strip("'")
        assert out_dir.startswith(str(disk))
        fill(disk / "filler")  # someone else filled the disk
        replies = [k.run(f"big = %bg -n big !head -c {BIG} /dev/zero | tr '\\0' x; echo; echo end\n"
                         "%bg --wait big --timeout 30")]
        replies.append(k.run("nxt = %bg -n nxt !echo next\n%bg --wait nxt --timeout 30"))
        replies.append(k.run("%bg --log big --tail 1\n%bg --list"))
        assert k.value("big.status, len(big.output), nxt.status, nxt.output") == (
            f"('succeeded', {TAIL}, 'succeeded', 'next\\n')")
        assert "No space left on device" in k.value("big.output_buffer.lost")
        assert "the output is incomplete" in replies[2].all_text and "end" in replies[2].all_text

        (disk / "filler").unlink()
        gate = tmp_path / "gate"
        k.run(f"slow = %bg -n slow !echo before; while [ ! -e {gate} ]; do sleep 0.05; done; echo after")
        k.run("import time\nt0 = time.monotonic()\n"
              "while 'before' not in slow.output_buffer.tail() and time.monotonic() - t0 < 10: time.sleep(0.02)")
        k.run("import shutil; shutil.rmtree(slow.output_buffer.path)")
        gate.touch()
        replies.append(k.run("%bg --wait slow --timeout 30\nprint(repr(slow.output))\n%bg --log slow"))
        assert "'before\\nafter\\n'" in replies[-1].stdout
        assert "No such file or directory" in replies[-1].all_text
        replies.append(k.run("slow.status, slow.output_buffer.complete"))
        assert replies[-1].texts[-1] == "('succeeded', True)"
        idle = k.drain_idle(0.3)
    finally:
        stop_kernel(k)
        _umount(disk)
    everything = "\n".join(r.all_text for r in replies) + json.dumps([m["content"] for m in idle], default=str)
    assert "Traceback" not in everything and "Exception in thread" not in everything
    assert "I/O operation on closed file" not in everything
