"""The ledger from the user's side: real kernels restarted, killed and run side by side over one real SQLite file."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import start_kernel, stop_kernel
from helpers import wait_until

from ttasks_ipy.core.ledger import SCHEMA_VERSION, Ledger
from ttasks_ipy.core.ledger.store import COLUMNS
from ttasks_ipy.core.proctable import proc_info


@pytest.fixture
def data(tmp_path):
    """A Jupyter data directory of the test's own (the ledger's default home), for kernels started with ``env``."""
    return {"JUPYTER_DATA_DIR": str(tmp_path / "jupyter")}


def ledger_file(env) -> Path:
    return Path(env["JUPYTER_DATA_DIR"]) / "ttasks_ipy" / "ledger.sqlite"


def restart(k) -> None:
    k.km.restart_kernel(now=False)
    k.kc.wait_for_ready(timeout=60)
    k.drain_idle(0.2)
    k.run("%load_ext ttasks_ipy\n%config TTasks.widgets = False")


def rows(env, sql="SELECT name, status FROM tasks ORDER BY id"):
    con = sqlite3.connect(ledger_file(env))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def alive(pid: int) -> bool:
    info = proc_info(pid)
    return info is not None and info.state != "Z"


def test_history_logs_and_results_are_found_again_after_a_restart(data, tmp_path):
    k = start_kernel(env=data)
    try:
        k.run("import threading\n"
              "class Point:\n    def __init__(self, x): self.x = x\n"
              "%bg -n fit model = {'w': [1, 2, 3]}; p = Point(5)\n"
              "%bg -n answer -o a 6 * 7\n"
              "%bg -n cmd -o r !echo hello; echo oops >&2; exit 3\n"
              "%bg -n lockish held = threading.Lock()\n"
              "%bg --wait")
        restart(k)
        hist = k.run("%bg --history").stdout
        lines = hist.splitlines()
        assert lines[0].split() == ["id", "started", "name", "kind", "status", "elapsed", "what", "kept"]
        assert [ln.split()[3] for ln in lines[1:5]] == ["lockish", "cmd", "answer", "fit"]  # newest first
        assert "failed (exit status 3)" in lines[2]
        assert "→ model, p" in lines[4] and "→ a" in lines[3]
        assert "not kept: held (cannot be serialised: TypeError)" in lines[1], lines[1]
        log = k.run("%bg --log cmd").stdout
        assert "[bg] cmd (ledger #3" in log and "failed (exit status 3)" in log
        assert "hello" in log and "--- stderr ---\noops" in log
        assert k.value("'model' in dir() or 'a' in dir()") == "False"  # nothing comes back by itself
        out = k.run("%bg --load fit\n%bg --load answer -o b\n%bg --load cmd\n"
                    "print(model, b, r.returncode, r.output, type(p).__name__, p.x)")
        assert "[bg] loaded model, p from fit (ledger #1" in out.stdout  # a class of the notebook's own too
        assert "[bg] loaded b from answer" in out.stdout
        assert "{'w': [1, 2, 3]} 42 3 hello\n Point 5" in out.stdout
        r = k.run("%bg --load lockish", allow_error=True)
        assert r.error is None and "UsageError" in r.stderr
        assert "lockish: not kept: held (cannot be serialised: TypeError)" in r.stderr
        r = k.run("%bg --forget cmd fit\n%bg --history")
        assert "[bg] forgot 2 tasks (cmd, fit)" in r.stdout
        assert " cmd " not in r.stdout and " fit " not in r.stdout and " answer " in r.stdout
    finally:
        stop_kernel(k)


def test_bad_ledger_actions_are_one_line_each(data):
    k = start_kernel(env=data)
    try:
        for line, says in [
            ("%bg --load nothere", "no task or graph 'nothere' in the ledger"),
            ("%bg --forget", "name the tasks (NAME, ID, a graph), or give --older-than AGE"),
            ("%bg --forget --older-than soon", "write an age like 30d, 12h, 90m or 45s, not 'soon'"),
            ("%bg --history 0", "--history must be a whole number from 1"),
            ("%bg --history --older-than 3d", "--older-than goes with --forget"),
            ("%bg --detach x = 1", "--detach goes with a command"),
            ("%bg --detach --retries 2 !true", "--retries does not go with --detach"),
            ("%bg --detach --dask !true", "--dask does not go with --detach (a detached command runs on this machine"),
        ]:
            r = k.run(line, allow_error=True)
            assert r.error is None and says in r.stderr, (line, r.stderr)
            assert "Traceback" not in r.stderr
        assert rows(data, "SELECT count(*) FROM tasks") == [(0,)]
    finally:
        stop_kernel(k)


def test_a_task_running_when_its_kernel_was_killed_shows_lost(data):
    k = start_kernel(env=data)
    try:
        k.run("%bg -n slow !sleep 60")
        wait_until(lambda: ledger_file(data).exists() and rows(data) == [("slow", "running")], 15, "slow recorded")
        os.kill(k.pid, signal.SIGKILL)
    finally:
        stop_kernel(k)
    k = start_kernel(env=data)
    try:
        hist = k.run("%bg --history").stdout
        assert "lost (its kernel ended while it ran)" in hist and "running" not in hist
    finally:
        stop_kernel(k)


def test_two_kernels_writing_at_once_lose_nothing(data):
    ks = [start_kernel(env=data), start_kernel(env=data)]
    try:
        for k in ks:
            k.kc.execute("for i in range(150):\n    %bg --quiet -n t{i} pass\n")
        for k in ks:
            k.kc.get_shell_msg(timeout=60)
        for k in ks:
            k.run("%bg --wait", timeout=60)
            k.run("%bg --history 1")  # writes what waits
        assert rows(data, "SELECT count(*), count(DISTINCT kid) FROM tasks WHERE status = 'succeeded'") == [(300, 2)]
        both = ks[0].run("%bg --history 400").stdout
        assert len(both.splitlines()) == 301
    finally:
        for k in ks:
            stop_kernel(k)


def test_a_corrupt_ledger_is_moved_aside_with_one_warning_and_tasks_run(data):
    path = ledger_file(data)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage" * 1000)
    k = start_kernel(env=data, load=False)
    try:
        first = k.run("%load_ext ttasks_ipy\n%config TTasks.widgets = False\n%bg -n v 1 + 1\n%bg --wait v")
        assert first.stdout.count("[bg] ledger") == 1 and "moved aside" in first.stdout
        assert "✓ v finished" in first.stdout
        later = k.run("%bg -n w -o ww 2 + 2\n%bg --wait w\n%bg --history")
        assert "[bg] ledger" not in later.stdout and "→ ww" in later.stdout and " v " in later.stdout
        assert [p.name.split(".corrupt-")[0] for p in path.parent.iterdir() if ".corrupt-" in p.name] == \
            ["ledger.sqlite"]
    finally:
        stop_kernel(k)


def test_a_locked_ledger_says_so_once_and_catches_up(data):
    path = ledger_file(data)
    Ledger(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    k = start_kernel(env=data, load=False)
    try:
        said = [k.run("%load_ext ttasks_ipy\n%config TTasks.widgets = False").stdout]
        for i in range(3):
            r = k.run(f"%bg -n v{i} -o x{i} {i}\n%bg --wait v{i}")
            assert "finished in" in r.stdout  # tasks run on
            said.append(r.stdout)
        # the writer gives up on a round after its busy timeout; the warning is said at the next cell's end
        wait_until(lambda: "[bg] ledger" in "".join(said) or said.append(k.run("None").stdout), 30, "a warning")
        for _ in range(3):
            said.append(k.run("%bg -n u --replace 1\n%bg --wait u").stdout)
        text = "".join(said)
        assert text.count("[bg] ledger") == 1 and "is locked" in text, text
        holder.execute("ROLLBACK")
        holder.close()
        hist = k.run("%bg --history", timeout=60).stdout
        assert "→ x0" in hist and "→ x2" in hist
    finally:
        stop_kernel(k)


def test_a_newer_ledger_is_refused_and_left_untouched(data):
    path = ledger_file(data)
    path.parent.mkdir(parents=True)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    con.commit()
    con.close()
    before = path.read_bytes()
    k = start_kernel(env=data, load=False)
    try:
        r = k.run("%load_ext ttasks_ipy\n%config TTasks.widgets = False\n%bg -n v 3\n%bg --wait v")
        assert r.stdout.count("written by a newer ttasks_ipy") == 1 and "✓ v finished" in r.stdout
        r = k.run("%bg --history", allow_error=True)
        assert "UsageError" in r.stderr and "newer ttasks_ipy" in r.stderr
    finally:
        stop_kernel(k)
    assert path.read_bytes() == before


def test_the_ledger_can_be_turned_off_and_moved(data, tmp_path):
    k = start_kernel(env=data)
    try:
        r = k.run("%config TTasks.ledger = False")
        assert "[bg] ledger off" in r.stdout
        k.run("%bg -n v 1\n%bg --wait v")
        r = k.run("%bg --history", allow_error=True)
        assert "the ledger is off (%config TTasks.ledger = True" in r.stderr
        other = tmp_path / "elsewhere" / "my.sqlite"
        r = k.run(f"%config TTasks.ledger_path = {str(other)!r}\n%config TTasks.ledger = True")
        assert f"recording tasks in {other}" in r.stdout
        k.run("%bg -n here -o w 2\n%bg --wait here")
        assert " here " in k.run("%bg --history").stdout
        assert not ledger_file(data).exists() or rows(data, "SELECT count(*) FROM tasks") == [(0,)]
        k.run("%config TTasks.ledger_result_cap = 10\n%bg -n big x = 'y' * 100\n%bg --wait big")
        assert "not kept: x (115 B, over ledger_result_cap of 10 B)" in k.run("%bg --history 1").stdout
        os.chmod(other, 0o666)
        r = k.run("%bg --load here", allow_error=True)
        assert "may be written by others (mode 666)" in r.stderr and "chmod go-w" in r.stderr
    finally:
        stop_kernel(k)


# ---- detached commands ----------------------------------------------------------------
WAITER = "!echo begun; while [ ! -e {d}/say ]; do sleep 0.05; done; echo after restart; " \
         "while [ ! -e {d}/go ]; do sleep 0.05; done; echo done; exit {code}"


def detached_pid(env, name: str) -> tuple[int, str]:
    wait_until(lambda: ledger_file(env).exists() and rows(env, f"SELECT pid FROM tasks WHERE name = '{name}'")
               and rows(env, f"SELECT pid FROM tasks WHERE name = '{name}'")[0][0], 15, "the pid recorded")
    return rows(env, f"SELECT pid, folder FROM tasks WHERE name = '{name}'")[0]


def test_a_detached_command_outlives_a_restart_is_followed_live_and_delivered(data, tmp_path):
    k = start_kernel(env=data)
    try:
        r = k.run("%bg --detach -n train -o r " + WAITER.format(d=tmp_path, code=0))
        assert "train → r started (bash)" in r.all_text
        pid, folder = detached_pid(data, "train")
        wait_until(lambda: "begun" in Path(folder, "stdout.txt").read_text(), 10, "output in the ledger's file")
        restart(k)  # the load in it finds the command again
        assert alive(pid)
        hist = k.run("%bg --history").stdout
        assert "running (detached)" in hist
        (tmp_path / "say").touch()
        wait_until(lambda: "after restart" in k.run("%bg --log train").stdout, 20, "the output followed live")
        (tmp_path / "go").touch()
        r = k.run("%bg --wait train\nprint(r.returncode, r.output.split())")
        assert "✓ train finished" in r.stdout
        assert "0 ['begun', 'after', 'restart', 'done']" in r.stdout
        assert "succeeded" in k.run("%bg --history").stdout  # the same row, ended by the kernel that followed it
        assert rows(data, "SELECT name, status FROM tasks") == [("train", "succeeded")]
    finally:
        stop_kernel(k)


def test_a_detached_command_runs_here_when_tasks_go_to_a_cluster(data):
    k = start_kernel(env=data)
    try:
        k.run("%config TTasks.backend = 'dask'")
        r = k.run("h = %bg --detach --quiet -n here !echo on this machine\nh.wait(20)\n"
                  "print(h.status, h.spec.backend, h.result.output.strip())")
        assert r.stdout.splitlines()[-1] == "succeeded thread on this machine"
        assert k.value("import sys; 'distributed' in sys.modules") == "False"  # no cluster was asked for
        pid, _ = detached_pid(data, "here")
        assert pid > 0
    finally:
        stop_kernel(k)


def test_a_re_found_detached_command_can_be_cancelled(data, tmp_path):
    k = start_kernel(env=data)
    try:
        k.run("%bg --detach -n train !trap 'echo bye' TERM; while true; do sleep 0.05; done")
        pid, _ = detached_pid(data, "train")
        restart(k)
        assert alive(pid)
        r = k.run("%bg --cancel train")
        assert "[bg] cancelled: train" in r.stdout
        wait_until(lambda: not alive(pid), 15, "the detached command ended")
        hist = k.run("%bg --history").stdout
        assert "cancelled by user" in hist and "running" not in hist
    finally:
        stop_kernel(k)


def test_a_detached_command_that_ended_while_no_kernel_ran_is_delivered_at_load(data, tmp_path):
    k = start_kernel(env=data)
    try:
        k.run("%bg --detach -n train -o r " + WAITER.format(d=tmp_path, code=4))
        pid, folder = detached_pid(data, "train")
    finally:
        stop_kernel(k)
    (tmp_path / "say").touch()
    (tmp_path / "go").touch()
    wait_until(lambda: Path(folder, "exit").exists(), 15, "the command ended on its own")
    k = start_kernel(env=data, load=False)
    try:
        r = k.run("%load_ext ttasks_ipy\n%config TTasks.widgets = False")
        assert "[bg] found 1 detached task again: train (ended while no kernel watched)" in r.stdout
        assert "✗ train failed" in r.stdout and "exit status 4" in r.stdout
        assert k.value("r.returncode, r.output.split()") == "(4, ['begun', 'after', 'restart', 'done'])"
        assert "failed (exit status 4)" in k.run("%bg --history").stdout
        assert k.run("%bg --log train").stdout.rstrip().endswith("done")
    finally:
        stop_kernel(k)


def test_a_recycled_pid_is_never_followed_or_killed(data, tmp_path):
    """A detached command's pid now names another process (its start time differs): that one is left alone."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ledger = Ledger(ledger_file(data))
        folder = ledger.output_folder("gone", 1, create=True)
        row = dict.fromkeys(COLUMNS)
        row.update(kid="gone", session=os.getcwd(), tid=1, name="train", kind="bash", description="!sleep 60",
                   state="running", status="running", attempt=1, retries=0, created=time.time() - 60,
                   started=time.time() - 60, detached=1, pid=other.pid, pid_start=proc_info(other.pid).start + 1,
                   folder=str(folder), updated=time.time())
        ledger.write([[row[c] for c in COLUMNS]])
        ledger.close()
        k = start_kernel(env=data, load=False)
        try:
            r = k.run("%load_ext ttasks_ipy\n%config TTasks.widgets = False\n%bg --cancel train")
            assert "train (ended while no kernel watched)" in r.stdout
            assert "ended without an exit status" in r.stdout
            assert alive(other.pid) and other.poll() is None
        finally:
            stop_kernel(k)
    finally:
        other.kill()
        other.wait()


def test_a_graph_is_recorded_task_by_task_and_loads_back_whole(data):
    k = start_kernel(env=data)
    try:
        k.run("%%bgraph g\nprep: a = 1\nfit after prep: b = 2\nreport after fit: !echo report\n")
        k.run("g.wait(30)")
        restart(k)
        hist = k.run("%bg --history").stdout
        assert [ln.split()[3] for ln in hist.splitlines()[1:4]] == ["g.report", "g.fit", "g.prep"]
        r = k.run("%bg --load g\nprint(a, b)\n%bg --log g.report")
        assert "[bg] loaded a, b from g" in r.stdout and "1 2" in r.stdout
        assert "[bg] g.report (ledger #3" in r.stdout and r.stdout.rstrip().endswith("report")
    finally:
        stop_kernel(k)


def test_a_detached_command_is_found_again_after_unload_and_load_in_the_same_kernel(data, tmp_path):
    k = start_kernel(env=data)
    try:
        k.run("%bg --detach -n train -o r " + WAITER.format(d=tmp_path, code=0))
        pid, _ = detached_pid(data, "train")
        r = k.run("%unload_ext ttasks_ipy")
        assert r.stdout == "[bg] unloaded: left 1 detached command running (train; the next load follows them again)\n"
        assert alive(pid)
        r = k.run("%load_ext ttasks_ipy\n%config TTasks.widgets = False")
        assert "[bg] found 1 detached task again: train (running)" in r.stdout
        (tmp_path / "say").touch()
        (tmp_path / "go").touch()
        r = k.run("%bg --wait train\nprint(r.output.split())")
        assert "✓ train finished" in r.stdout and "['begun', 'after', 'restart', 'done']" in r.stdout
    finally:
        stop_kernel(k)


def test_a_graph_with_a_task_lost_with_its_kernel_is_rerun_keeping_what_succeeded(data, tmp_path):
    runs, flag = tmp_path / "runs", tmp_path / "flag"
    k = start_kernel(env=data)
    try:
        k.run(f"%%bgraph g\nprep: !echo ran >> {runs}; echo 10\n"
              f"slow after prep: !while [ ! -e {flag} ]; do sleep 0.05; done; echo ok\n"
              "last after slow, prep: c = int(upstream.prep.output) * 2\n")
        wait_until(lambda: ledger_file(data).exists()
                   and ("slow", "running") in rows(data), 15, "slow recorded as running")
        os.kill(k.pid, signal.SIGKILL)
    finally:
        stop_kernel(k)
    k = start_kernel(env=data)
    try:
        hist = k.run("%bg --history").stdout
        assert "g.slow" in hist and "lost (its kernel ended while it ran)" in hist
        flag.touch()
        r = k.run("%bg --rerun g\ng.wait(30)\nprint(g.ok, c)")
        assert "[bg] graph g rerun from the ledger: kept prep; running slow, last again" in r.stdout
        assert "True 20" in r.stdout
        assert runs.read_text() == "ran\n"  # what succeeded was not run again
        assert "nothing to rerun" in k.run("%bg --rerun g").stdout
        r = k.run("%bg --rerun nosuch", allow_error=True)
        assert "no graph 'nosuch' here or in the ledger" in r.stderr
    finally:
        stop_kernel(k)
