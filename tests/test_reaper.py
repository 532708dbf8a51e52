"""The reaper: what a task starts is ended when the kernel dies, from the moment it is forked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import start_kernel, stop_kernel
from helpers import wait_until

from ttasks_ipy.core import Executor
from ttasks_ipy.core.proctable import MARK_VAR, is_marked, mark_environ, proc_info
from ttasks_ipy.core.reaper import Reaper

#: a command whose shell and background child both ignore SIGTERM; it writes their pids to $PIDS
TREE = "echo $$ >> $PIDS; trap '' TERM; (trap '' TERM; sleep 300) & echo $! >> $PIDS; wait"


def alive(pid: int) -> bool:
    info = proc_info(pid)
    return info is not None and info.state != "Z"


def pids_in(path: Path, n: int, timeout: float = 15) -> list[int]:
    wait_until(lambda: path.exists() and len(path.read_text().split()) >= n, timeout, f"{n} pids in {path}")
    return [int(x) for x in path.read_text().split()]


def all_gone(pids: list[int], timeout: float) -> None:
    wait_until(lambda: not any(alive(p) for p in pids), timeout, f"processes {[p for p in pids if alive(p)]} gone")


def test_the_executor_starts_its_reaper_at_construction():
    ex = Executor(grace=0.3)
    try:
        assert ex.reaper.pid is not None and alive(ex.reaper.pid)
    finally:
        ex.shutdown()


def test_marks_add_to_an_outer_kernels_mark():
    env = mark_environ({"A": "1"}, "t1")
    assert env[MARK_VAR] == "t1"
    assert mark_environ(env, "t2")[MARK_VAR] == "t1:t2"
    assert mark_environ(env, "t1") is env


def test_a_closed_reaper_ends_marked_processes_that_left_their_session(tmp_path):
    reaper = Reaper(0.3)
    reaper.start()
    pids = tmp_path / "pids"
    env = reaper.mark({**os.environ, "PIDS": str(pids)})
    # no registration at all: setsid -f forks a new session that nobody ever names
    subprocess.run(["setsid", "-f", "bash", "-c", TREE], env=env, check=True)
    found = pids_in(pids, 2)
    assert all(is_marked(p, reaper.token) for p in found)
    reaper.close()
    all_gone(found, 0.3 + 5)


def test_the_reaper_process_starts_fast_and_loads_no_package():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", "-c",
                        "import runpy, sys; sys.argv = ['reaper', '0', 'tok']; "
                        "runpy.run_path(sys.argv_path, run_name='__main__')".replace(
                            "sys.argv_path", repr(str(Path(__file__).parents[1] / "ttasks_ipy/core/reaper.py")))],
                       input=b"", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    assert b"ttasks_ipy" not in r.stderr
    assert time.perf_counter() - t0 < 2


# ---- from the user's side ---------------------------------------------------------
def kill_kernel(k, how: str) -> None:
    if how == "sigkill":
        os.kill(k.pid, signal.SIGKILL)
    else:  # what the kernel manager does on shutdown: SIGINT, then SIGKILL to the kernel's process group
        k.km.shutdown_kernel(now=True)


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_a_command_killed_with_its_kernel_before_it_was_registered_does_not_survive(tmp_path, how):
    """The window between the fork and the kernel knowing the pid, held open for 4 s: the command runs in it."""
    pids = tmp_path / "pids"
    k = start_kernel(env={"TTASKS_TEST_REGISTER_DELAY": "4", "TTASKS_TEST_SPAWN_DELAY": "4", "PIDS": str(pids)})
    try:
        k.run("h = %bg --quiet !" + TREE)  # $$, $! and $PIDS are the shell's (none is a Python name here)
        t0 = time.monotonic()
        found = pids_in(pids, 2)
        assert time.monotonic() - t0 < 3.5, "the test must kill the kernel inside the window"
        kill_kernel(k, how)
        all_gone(found, 2.0 + 5)
    finally:
        stop_kernel(k)


# ---- a killed reaper is replaced ----------------------------------------------------
def unmarked_session(tmp_path: Path) -> list[int]:
    """A TERM-ignoring tree in a session of its own, started without the mark (only a registration covers it)."""
    pids = tmp_path / "unmarked"
    env = {k: v for k, v in os.environ.items() if k != MARK_VAR}
    subprocess.Popen(["bash", "-c", TREE], env={**env, "PIDS": str(pids)}, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pids_in(pids, 2)


def test_a_killed_reaper_is_replaced_at_once_and_told_every_session(tmp_path, caplog):
    reaper = Reaper(0.3)
    reaper.start()
    found = unmarked_session(tmp_path)
    reaper.register(found[0])
    first = reaper.pid
    assert first is not None
    caplog.set_level("WARNING", "ttasks_ipy")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: reaper.pid not in (first, None) and alive(reaper.pid), 3, "a new reaper")
    wait_until(lambda: "re-registered 1 task sessions" in caplog.text, 3, "the warning")
    assert f"the reaper process {first} was killed (SIGKILL)" in caplog.text
    assert caplog.text.count("re-registered") == 1
    assert reaper.restarts == 1
    assert all(alive(p) for p in found)  # nothing happens to the tasks themselves
    reaper.close()  # as if the kernel died: the new reaper knows the session
    all_gone(found, 0.3 + 5)


def test_a_reaper_that_keeps_dying_is_restarted_with_a_delay_not_in_a_loop():
    reaper = Reaper(0.3)
    reaper.start()
    try:
        for _ in range(3):  # each dies within a second of its start
            pid = reaper.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: reaper.pid not in (pid, None), 5, "a new reaper")
        assert reaper.restarts == 3
        wait_until(lambda: reaper.pid is not None and alive(reaper.pid), 5, "a reaper after the delay")
        assert reaper.restarts == 3
    finally:
        reaper.close()


def reaper_pid(k) -> int | None:
    text = k.value("_s().executor.reaper.pid")  # nothing is shown for None: while it is being replaced
    return int(text) if text else None


def test_killing_the_reaper_while_tasks_run_leaves_no_process_after_a_kernel_sigkill(tmp_path):
    pids = tmp_path / "pids"
    k = start_kernel(env={"PIDS": str(pids)})
    try:
        k.run("from ttasks_ipy.kernel.extension import session as _s\nimport logging\n_seen = []\n"
              "_h = logging.Handler()\n_h.emit = _seen.append\nlogging.getLogger('ttasks_ipy').addHandler(_h)")
        k.run("hb = %bg --quiet !" + TREE)
        k.run("hp = %bg --quiet --process import time; time.sleep(300)")
        found = pids_in(pids, 2)
        # running (claimed) comes before the worker process exists: wait for the worker too
        k.run("import time\n_end = time.monotonic() + 60\n"
              "while (hp.status != 'running' or not _s().worker_pool().pids) and time.monotonic() < _end:\n"
              "    time.sleep(0.01)")
        workers = [int(p) for p in k.value("_s().worker_pool().pids").strip("[]").split(",")]
        first = reaper_pid(k)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: reaper_pid(k) not in (first, None), 5, "a new reaper")
        msgs = k.value("[r.getMessage() for r in _seen]")
        assert "started a new one and re-registered" in msgs, msgs
        os.kill(k.pid, signal.SIGKILL)
        all_gone(found + workers, 2.0 + 5)
    finally:
        stop_kernel(k)
