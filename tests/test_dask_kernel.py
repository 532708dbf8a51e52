"""``--dask`` from the user's side: a real kernel reaching a real ``dask scheduler`` + ``dask worker`` pair.

The scheduler and a worker with 2 processes are started as processes for the
module (``TTasks.dask_address`` points the kernel at them). Tasks and graphs
run there (the worker's pid is not the kernel's); output is seen while a task
runs; cancel stops a running command (no process left on the machine) and a
running Python loop; a killed worker fails its task as lost; an address that
answers nothing is one line, and nothing starts.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Kernel, start_kernel, stop_kernel
from helpers import no_process_left, wait_until

pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)

DASK = str(Path(sys.executable).with_name("dask"))


def _end_tree(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a ``dask scheduler`` with one ``dask worker`` of 2 processes (1 thread each)."""
    import distributed

    folder = tmp_path_factory.mktemp("dask")
    info = folder / "scheduler.json"
    common = {"cwd": folder, "start_new_session": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    sched = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                              "--scheduler-file", str(info)], **common)
    procs = [sched]
    try:
        wait_until(lambda: info.exists() and info.stat().st_size > 0, 60, "the scheduler file")
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen([DASK, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"], **common))
        with distributed.Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            _end_tree(p)


@pytest.fixture(scope="module")
def kernel(scheduler: str) -> Iterator[Kernel]:
    k = start_kernel()
    k.run(f"%config TTasks.dask_address = {scheduler!r}\nimport os, time, ttasks_ipy\nkernel_pid = os.getpid()")
    yield k
    stop_kernel(k)


def executing(address: str) -> int:
    """Tasks running in a worker thread now, over the cluster."""
    import distributed

    with distributed.Client(address, timeout=30) as c:
        return sum(c.run(lambda dask_worker: dask_worker.state.executing_count).values())


def test_a_python_task_and_a_command_run_on_the_workers(kernel: Kernel, tmp_path: Path) -> None:
    kernel.run(f"xs = [1, 2, 3]\nd = {str(tmp_path)!r}\nn = 7")
    r = kernel.run("h = %bg --dask pid = os.getpid(); total = sum(xs)")
    assert "[bg] Dask: connected to tcp://127.0.0.1:" in r.stdout
    kernel.run("%bg --wait")
    assert kernel.value("pid != kernel_pid, total") == "(True, 6)"
    assert kernel.value("h.record().where.startswith('Dask worker tcp://127.0.0.1:')") == "True"
    kernel.run("%bg --dask -o e --env N=n*6 --cwd {d} !echo $$N $$PWD $$$$\n%bg --wait")
    out = kernel.value("e.output")
    n, cwd, pid = out.strip("'").split("\\n")[0].split()
    assert (n, cwd) == ("42", str(tmp_path)) and int(pid) != int(kernel.value("kernel_pid"))


def test_output_is_seen_before_the_task_ends(kernel: Kernel, tmp_path: Path) -> None:
    go = tmp_path / "go"
    kernel.run(f"go = {str(go)!r}")
    kernel.run("h = %bg --dask -n talk !echo first; while [ ! -e {go} ]; do sleep 0.02; done; echo second")
    wait_until(lambda: kernel.value("h.output") == "'first\\n'", 30, "the first line while it runs")
    assert kernel.value("h.status") == "'running'"
    go.touch()
    kernel.run("%bg --wait talk")
    assert kernel.value("h.status, h.output") == "('succeeded', 'first\\nsecond\\n')"


def test_cancel_stops_a_running_command_and_leaves_no_process(kernel: Kernel) -> None:
    kernel.run("h = %bg --dask -n stubborn !trap '' TERM; sleep 300 & echo $$ $!; wait")
    wait_until(lambda: kernel.value("h.output") != "''", 30, "the command started")
    sid, child = (int(x) for x in kernel.value("h.output").strip("'").split("\\n")[0].split())
    r = kernel.run("%bg --cancel stubborn")
    assert "[bg] cancelled: stubborn" in r.stdout
    no_process_left(sid, 2.0 + 10)
    wait_until(lambda: not os.path.exists(f"/proc/{child}"), 10, "the backgrounded sleep ended")
    assert kernel.value("h.status") == "'cancelled'"


def test_cancel_stops_a_running_python_loop(kernel: Kernel, scheduler: str) -> None:
    kernel.run("%%bg --dask -n spin\nttasks_ipy.progress(1, 'spinning')\nn = 0\nwhile True:\n    n += 1\n")
    wait_until(lambda: kernel.value("ttasks_ipy.task('spin').progress[0]") == "1.0", 30, "the loop runs")
    assert executing(scheduler) == 1
    kernel.run("%bg --cancel spin")
    wait_until(lambda: executing(scheduler) == 0, 15, "the loop stopped on its worker")
    assert kernel.value("ttasks_ipy.task('spin').status") == "'cancelled'"


def test_a_graph_spreads_over_the_workers(kernel: Kernel, tmp_path: Path) -> None:
    kernel.run(f"meet = {str(tmp_path)!r}")
    # a and b each wait for the other to start: they can only end if they run at once, on the 2 workers
    wait_other = ("open(os.path.join(meet, me), 'w').close()\n"
                  "    while not os.path.exists(os.path.join(meet, other)):\n"
                  "        ttasks_ipy.current_task().sleep(0.02)\n    where = os.getpid()")
    cell = (f"%%bgraph meeting --dask\n"
            f"a:\n    import os, ttasks_ipy\n    me, other = 'a', 'b'\n    {wait_other}\n"
            f"b:\n    import os, ttasks_ipy\n    me, other = 'b', 'a'\n    {wait_other}\n"
            "c after a, b: differ = upstream.a.value['where'] != upstream.b.value['where']\n"
            "here after c local: here = os.getpid()\n")
    r = kernel.run(cell)
    assert r.texts == ["[bg] graph meeting started: 4 tasks (a, b, c, here)"]
    kernel.run("meeting.wait(60)", timeout=70)
    assert kernel.value("meeting.ok, differ") == "(True, True)"
    assert kernel.value("here == kernel_pid, meeting.a.record().where != meeting.b.record().where") == "(True, True)"


def test_a_killed_worker_fails_its_task_as_lost(kernel: Kernel) -> None:
    kernel.run("h = %bg --dask -n victim print(os.getpid(), flush=True); ttasks_ipy.current_task().sleep(300)")
    wait_until(lambda: kernel.value("h.output") != "''", 30, "the task started")
    os.kill(int(kernel.value("h.output").strip("'").split("\\n")[0]), signal.SIGKILL)
    kernel.run("%bg --wait victim --timeout 30")
    assert kernel.value("h.status") == "'failed'"
    assert kernel.value("h.reason").startswith("'WorkerDied: lost (worker tcp://127.0.0.1:")


def test_an_address_that_answers_nothing_is_one_line_and_starts_nothing(kernel: Kernel, scheduler: str) -> None:
    before = kernel.value("len(ttasks_ipy.kernel.session().tasks())")
    kernel.run("%config TTasks.dask_timeout = 1\n%config TTasks.dask_address = 'tcp://127.0.0.1:9'")
    started = time.monotonic()
    r = kernel.run("%bg --dask -o v 1 + 1")
    assert time.monotonic() - started < 15
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "UsageError: %bg: cannot reach the Dask scheduler at tcp://127.0.0.1:9: "), r.stderr
    assert "TTasks.dask_address" in lines[0]
    assert kernel.value("len(ttasks_ipy.kernel.session().tasks())") == before
    kernel.run(f"%config TTasks.dask_address = {scheduler!r}\n%config TTasks.dask_timeout = 10")
    kernel.run("%bg --dask -o v 1 + 1\n%bg --wait")
    assert kernel.value("v") == "2"


@pytest.mark.parametrize("cell, message", [
    ("%bg --dask --local x = 1", "%bg: --dask and --local say different places: give one"),
    ("%bg --dask --process x = 1", "%bg: --dask and --process say different places: give one"),
    ("%bg --dask ?what is 2 + 2", "%bg: a prompt runs here (it waits on the network, not the CPU): drop --dask"),
    ("%%bg --dask --local\nx = 1", "%bg: --dask and --local say different places: give one"),
    ("%%bgraph g --dask --local\na: 1", "%%bgraph: --dask and --local say different places: give one"),
    ("%%bgraph g --dask\na process local: 1", "%%bgraph g: line 2: task a says both process and local: give one"),
    ("%config TTasks.dask_workers = 0", "TTasks.dask_workers must be from 1 to 1024, not 0"),
])
def test_bad_dask_options_are_one_line_and_start_nothing(kernel: Kernel, cell: str, message: str) -> None:
    kernel.run("%config TTasks.llm_callable = 'json:dumps'")
    before = kernel.value("len(ttasks_ipy.kernel.session().tasks())")
    r = kernel.run(cell, allow_error=True)
    text = (r.stderr + (r.error["evalue"] if r.error else "")).strip()
    assert message in text and "\n" not in text.strip(), text
    assert kernel.value("len(ttasks_ipy.kernel.session().tasks())") == before


def test_a_killed_kernel_leaves_no_worker_and_no_command() -> None:
    import psutil

    k = start_kernel()
    try:
        k.run("h = %bg --dask -n s !sleep 300 & echo $$ $!; wait", timeout=60)  # on a LocalCluster of its own
        wait_until(lambda: k.value("h.output") != "''", 30, "the command started on a worker")
        pids = [int(x) for x in k.value("h.output").strip("'").split("\\n")[0].split()]
        pids += [p.pid for p in psutil.Process(k.pid).children(recursive=True)]
        os.kill(k.pid, signal.SIGKILL)

        def left() -> list[int]:
            out = []
            for pid in pids:
                try:
                    if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        out.append(pid)
                except psutil.NoSuchProcess:
                    pass
            return out

        wait_until(lambda: not left(), 30, "the workers and the command ended with the kernel")
    finally:
        k.kc.stop_channels()
        k.km.cleanup_resources()
