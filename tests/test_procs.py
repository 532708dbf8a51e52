"""Processes that leave the command's session are ended with it: cancel, timeout, its end, kernel SIGKILL."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import start_kernel, stop_kernel
from helpers import wait_until

from ttasks_ipy.core import BashRunner, Executor, TaskSpec
from ttasks_ipy.core.proctable import proc_info
from ttasks_ipy.core.supervisor import Supervisor

GRACE = 0.5
PY = sys.executable

#: each writes the pid of one process that is no longer in the command's session (or ignores SIGTERM) to $F
ESCAPES = {
    "setsid": "setsid sleep 300 & echo $! >> $F",
    "setsid-fork": "setsid -f sh -c 'echo $$ >> $F; exec sleep 300'",
    "python-setsid-ignoring-term": (
        f"{PY} -c 'import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(os.environ[\"F\"], \"a\").write(f\"{os.getpid()}\\n\"); time.sleep(300)' &"),
    "double-fork-daemon": (
        f"{PY} -c 'import os, signal, sys, time\n"
        "if os.fork(): sys.exit(0)\nos.setsid()\nif os.fork(): sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(os.environ[\"F\"], \"a\").write(f\"{os.getpid()}\\n\"); time.sleep(300)'"),
    "nohup": "nohup sleep 300 > /dev/null 2>&1 & echo $! >> $F",
    "grandchild-ignoring-term": "(trap '' TERM; exec sleep 300) & echo $! >> $F",
    "no-environment-and-setsid": "env -i setsid -f /bin/sh -c 'echo $$ >> \"$0\"; exec sleep 300' \"$F\"",
}


def alive(pid: int) -> bool:
    info = proc_info(pid)
    return info is not None and info.state != "Z"


def pids_in(path: Path, n: int, timeout: float = 15) -> list[int]:
    wait_until(lambda: path.exists() and len(path.read_text().split()) >= n, timeout, f"{n} pids in {path}")
    return [int(x) for x in path.read_text().split()]


def all_gone(pids: list[int], timeout: float) -> None:
    wait_until(lambda: not any(alive(p) for p in pids), timeout, f"processes {[p for p in pids if alive(p)]} gone")


@pytest.fixture(scope="module")
def ex():
    e = Executor(max_workers=8, grace=GRACE)
    yield e
    e.shutdown()


def escaping(kind: str, tmp_path: Path, then: str = "trap '' TERM; sleep 300") -> tuple[str, Path]:
    """A command that starts escape ``kind``, then runs ``then``; ``started(f)`` reads (escaped, shell)."""
    f = tmp_path / "pids"
    return f"export F={f}\n{ESCAPES[kind]}\necho $$ > $F.shell\n{then}", f


def started(f: Path) -> tuple[int, int]:
    escaped = pids_in(f, 1)[0]
    return escaped, pids_in(f.with_name(f.name + ".shell"), 1)[0]


def check_escaped(pid: int, shell: int) -> None:
    """The escapee really left the shell's session (or ignores TERM beside it): session ids alone would miss it."""
    info = proc_info(pid)
    assert info is not None and info.pid != shell


@pytest.mark.parametrize("kind", sorted(ESCAPES))
@pytest.mark.parametrize("how", ["cancel", "timeout", "end"])
def test_an_escaped_process_is_ended_with_its_command(ex, tmp_path, kind, how):
    if how == "end":  # the command exits on its own; what it left behind is ended after the drain and the grace
        # it ends once the escapee has said its pid (a slow start could otherwise be ended before it wrote it)
        cmd, f = escaping(kind, tmp_path, then='for i in $(seq 1000); do [ -s "$F" ] && break; sleep 0.02; done')
        t = ex.submit(TaskSpec(BashRunner(cmd, grace=GRACE)))
        escaped, shell = started(f)
        assert t.wait(15).status == "succeeded"
    else:
        cmd, f = escaping(kind, tmp_path)
        t = ex.submit(TaskSpec(BashRunner(cmd, grace=GRACE), timeout=1.0 if how == "timeout" else None))
        escaped, shell = started(f)
        check_escaped(escaped, shell)
        if how == "cancel":
            ex.cancel(t)
        assert t.wait(15).status == ("cancelled" if how == "cancel" else "failed")
    all_gone([escaped, shell], GRACE + 5)


def test_setsid_really_escapes_the_session(ex, tmp_path):
    cmd, f = escaping("setsid-fork", tmp_path)
    t = ex.submit(TaskSpec(BashRunner(cmd, grace=GRACE)))
    escaped, shell = started(f)
    assert proc_info(escaped).sid != shell == t.pid  # what a search by session id would miss
    ex.cancel(t)
    all_gone([escaped, shell], GRACE + 5)


# ---- the supervisor itself ---------------------------------------------------------
@pytest.fixture
def sup():
    s = Supervisor(grace=GRACE)
    s.start()
    yield s
    s.close()


def run(sup: Supervisor, cmd: str, **kw) -> tuple[bytes, bytes, int]:
    p = sup.spawn(["bash", "-c", cmd], env=kw.pop("env", dict(os.environ)), **kw)
    out, err = p.stdout.read(), p.stderr.read()
    code = p.wait(10)
    p.close()
    return out, err, code


def test_spawn_behaves_like_popen(sup, tmp_path):
    assert run(sup, "echo out; echo err >&2; exit 3") == (b"out\n", b"err\n", 3)
    assert run(sup, "kill -9 $$")[2] == -9
    assert run(sup, "pwd", cwd=tmp_path)[0] == f"{tmp_path}\n".encode()
    assert run(sup, "echo $X", env={"X": "1", "PATH": os.environ["PATH"]})[0] == b"1\n"
    assert run(sup, "cat")[0] == b""  # stdin is /dev/null
    out = run(sup, "echo $$ $(ps -o sid= -p $$)")[0].split()
    assert out[0] == out[1]  # the shell leads its own session: pid = sid
    trapped = run(sup, "trap -p INT TERM PIPE")[0]
    assert trapped == b""  # no signal ignored on the way in
    with pytest.raises(FileNotFoundError, match="No such file or directory: 'no-such-shell'"):
        sup.spawn(["no-such-shell", "-c", "true"], env=dict(os.environ))
    with pytest.raises(FileNotFoundError):
        sup.spawn(["bash", "-c", "true"], env=dict(os.environ), cwd=tmp_path / "missing")


def test_shims_are_reused(sup):
    for _ in range(20):
        assert run(sup, "true")[2] == 0
    assert sup.statistics()["forked"] <= 3


def test_a_killed_supervisor_costs_running_commands_nothing_and_is_replaced(sup, tmp_path):
    p = sup.spawn(["bash", "-c", "sleep 1; echo done"], env=dict(os.environ))
    first = sup.pid
    os.kill(first, signal.SIGKILL)
    assert p.stdout.read() == b"done\n" and p.wait(10) == 0
    p.close()
    wait_until(lambda: proc_info(first) is None or proc_info(first).state == "Z", 5, "the supervisor gone")
    for _ in range(10):  # every shim may be gone too: new ones come from a new supervisor
        assert run(sup, "true")[2] == 0
    assert sup.pid != first


LINGERING_PARENT = (  # a daemon whose parent ignores SIGTERM and lingers: it is handed on only when that one dies
    f"{PY} -c 'import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nos.setsid()\n"
    "if os.fork(): time.sleep(300)\n"
    "open(os.environ[\"F\"], \"a\").write(f\"{os.getpid()}\\n\"); time.sleep(300)' &")


def test_a_killed_shims_orphans_are_ended_also_when_handed_over_late(sup, tmp_path):
    f = tmp_path / "pids"
    p = sup.spawn(["bash", "-c", f"export F={f}\n{LINGERING_PARENT}\necho $$ > $F.shell\nsleep 300"],
                  env=dict(os.environ))
    escaped, shell = started(f)
    parent = proc_info(escaped).ppid
    os.kill(p.shim_pid, signal.SIGKILL)
    assert p.wait(10) == -signal.SIGKILL
    p.close()
    all_gone([escaped, parent, shell], GRACE + 5)


def test_a_killed_shim_ends_its_command_and_what_escaped(sup, tmp_path):
    cmd, f = escaping("double-fork-daemon", tmp_path, then="sleep 300")
    p = sup.spawn(["bash", "-c", cmd], env=dict(os.environ))
    escaped, shell = started(f)
    os.kill(p.shim_pid, signal.SIGKILL)
    assert p.wait(10) == -signal.SIGKILL
    p.close()
    all_gone([escaped, shell], GRACE + 5)


# ---- from the user's side: the kernel dies -------------------------------------------------
@pytest.mark.parametrize("how", ["sigkill", "shutdown"])
def test_nothing_escaped_outlives_a_killed_kernel(tmp_path, how):
    k = start_kernel()
    try:
        k.run("%config TTasks.max_workers = 10")  # all at once
        files = []
        for i, kind in enumerate(sorted(ESCAPES)):
            (tmp_path / str(i)).mkdir()
            cmd, f = escaping(kind, tmp_path / str(i))
            script = tmp_path / str(i) / "cmd.sh"
            script.write_text(cmd)
            files.append(f)
            k.run(f"h{i} = %bg --quiet !bash {script}")
        pids = [p for f in files for p in started(f)]
        if how == "sigkill":
            os.kill(k.pid, signal.SIGKILL)
        else:
            k.km.shutdown_kernel(now=True)  # SIGKILL to the kernel's process group
        all_gone(pids, 2.0 + 5)
    finally:
        stop_kernel(k)
