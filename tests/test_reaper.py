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
    """The window between the fork and the registration, held open for 4 s: the command already runs in it."""
    pids = tmp_path / "pids"
    k = start_kernel(env={"TTASKS_TEST_REGISTER_DELAY": "4", "PIDS": str(pids)})
    try:
        k.run("h = %bg --quiet !" + TREE.replace("$", "$$"))  # $$ is the shell's own $ in %bg
        t0 = time.monotonic()
        found = pids_in(pids, 2)
        assert time.monotonic() - t0 < 3.5, "the test must kill the kernel inside the window"
        kill_kernel(k, how)
        all_gone(found, 2.0 + 5)
    finally:
        stop_kernel(k)
