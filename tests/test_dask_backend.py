"""The Dask backend through the executor, on a real ``LocalCluster`` with 2 worker processes.

One cluster for the module (it starts in a few seconds); each test makes its
own executor on it. What is checked: tasks run in the workers' processes and
their values and names come back; output and progress arrive while a task
runs; cancel ends a running command's process tree and interrupts a running
Python loop; a killed worker fails its task as lost, or the task is retried.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Recorder, no_process_left, wait_until

from ttasks_ipy.core import BashRunner, EventKind, Executor, TaskSpec, TaskState, bind, compile_body
from ttasks_ipy.core.errors import SpecError
from ttasks_ipy.core.runners.portable import PortablePython

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def dask_backend() -> Iterator[Any]:
    from ttasks_ipy.core.backends.dask import connect

    backend = connect("", workers=2, threads_per_worker=1)
    yield backend
    backend.shutdown()


@pytest.fixture
def ex(dask_backend: Any) -> Iterator[Executor]:
    executor = Executor(max_workers=4)
    executor.add_backend(dask_backend)
    yield executor
    executor.cancel_all()
    executor.timers.close()
    executor.supervisor.close()
    executor.reaper.close()


def python(ex: Executor, source: str, ns: dict[str, Any] | None = None, **spec: Any) -> Any:
    body = compile_body(source, "<dask-test>")
    return ex.submit(TaskSpec(PortablePython(body, bind(body, ns or {})), backend="dask", **spec))


def command(ex: Executor, cmd: str, **spec: Any) -> Any:
    return ex.submit(TaskSpec(BashRunner(cmd), backend="dask", **spec))


def executing(backend: Any) -> int:
    """Tasks that run in a worker thread now, over the whole cluster (cancelled ones that still run too)."""
    counts = backend.client.run(lambda dask_worker: dask_worker.state.executing_count)
    return sum(counts.values())


def test_python_runs_in_a_worker_process_and_its_names_come_back(ex: Executor) -> None:
    t = python(ex, "import os\npid = os.getpid()\ntotal = sum(xs)\nprint('on the worker')", {"xs": [1, 2, 3]})
    t.wait(30)
    assert t.state is TaskState.SUCCEEDED, t.reason
    assert t.value["total"] == 6
    assert t.value["pid"] != os.getpid()
    assert t.output_buffer.read("stdout") == "on the worker\n"
    assert t.record().where.startswith("Dask worker tcp://127.0.0.1:")


def test_an_expression_error_and_a_command_come_back_as_on_local_backends(ex: Executor) -> None:
    ok = python(ex, "sum(range(10))")
    bad = python(ex, "1 / 0")
    cmd = command(ex, "echo out; echo err >&2; exit 3")
    ex.wait([ok, bad, cmd], timeout=30)
    assert ok.value == 45
    assert bad.state is TaskState.FAILED and bad.reason == "ZeroDivisionError: division by zero"
    assert "1 / 0" in (bad.traceback or "")
    assert cmd.state is TaskState.FAILED and cmd.reason == "exit status 3"
    assert (cmd.value.output, cmd.value.stderr, cmd.value.returncode) == ("out\n", "err\n", 3)
    assert cmd.output_buffer.read("stdout") == "out\n"


def test_output_and_progress_arrive_while_the_task_runs(ex: Executor, tmp_path: Path) -> None:
    go = tmp_path / "go"
    rec = Recorder(ex)
    source = (
        "import os, ttasks_ipy\n"
        "print('started', flush=True)\n"
        "ttasks_ipy.progress(40, 'warming up')\n"
        "while not os.path.exists(go):\n"
        "    ttasks_ipy.current_task().sleep(0.02)\n"
        "print('finished')\n"
    )
    t = python(ex, source, {"go": str(go)})
    ev = rec.wait_for(EventKind.PROGRESS, t, timeout=30)
    assert ev.data == {"percent": 40.0, "message": "warming up"}
    wait_until(lambda: "started" in t.output_buffer.read("stdout"), 30, "output while running")
    assert t.state is TaskState.RUNNING
    cmd = command(ex, f"echo one; while [ ! -e {go}2 ]; do sleep 0.02; done; echo two")
    wait_until(lambda: cmd.output_buffer.read("stdout") == "one\n", 30, "command output while running")
    assert cmd.state is TaskState.RUNNING
    go.touch()
    (tmp_path / "go2").touch()
    ex.wait([t, cmd], timeout=30)
    assert t.output_buffer.read("stdout") == "started\nfinished\n"
    assert cmd.output_buffer.read("stdout") == "one\ntwo\n" and cmd.state is TaskState.SUCCEEDED


def test_cancel_ends_a_running_command_tree_on_the_worker(ex: Executor) -> None:
    t = command(ex, "sleep 300 & echo $$ $!; wait")
    wait_until(lambda: t.output_buffer.read("stdout").strip() != "", 30, "the command started")
    sid, child = (int(x) for x in t.output_buffer.read("stdout").split())
    wait_until(lambda: t.pid == sid, 10, "the command's pid known here (a worker on this machine)")
    assert t.cancel()
    t.wait(10)
    assert t.state is TaskState.CANCELLED and t.reason == "cancelled by user"
    no_process_left(sid, 15)
    wait_until(lambda: not os.path.exists(f"/proc/{child}"), 15, "the backgrounded sleep ended")


def test_cancel_interrupts_a_running_python_loop(ex: Executor, dask_backend: Any) -> None:
    rec = Recorder(ex)
    t = python(ex, "import ttasks_ipy\nttasks_ipy.progress(1, 'spinning')\nn = 0\nwhile True:\n    n += 1\n")
    rec.wait_for(EventKind.PROGRESS, t, timeout=30)
    assert executing(dask_backend) == 1
    t.cancel()
    t.wait(10)
    assert t.state is TaskState.CANCELLED
    wait_until(lambda: executing(dask_backend) == 0, 15, "the loop stopped on its worker")
    assert python(ex, "2 + 2").wait(30).value == 4


def test_a_queued_task_is_cancelled_before_it_starts(ex: Executor, dask_backend: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    rec = Recorder(ex)
    wait = ("import os, ttasks_ipy\nttasks_ipy.progress(1)\n"
            "while not os.path.exists(go):\n    ttasks_ipy.current_task().sleep(0.02)\n")
    busy = [python(ex, wait, {"go": str(go)}) for _ in range(2)]
    for b in busy:
        rec.wait_for(EventKind.PROGRESS, b, timeout=30)
    queued = python(ex, "open(mark, 'w').write('ran')", {"mark": str(tmp_path / "mark")})
    queued.cancel()  # CANCELLED here at once; the cluster learns it asynchronously
    client = dask_backend.client

    def known() -> int:
        on_workers = sum(len(keys) for keys in client.processing().values())
        return on_workers + client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.queued))

    wait_until(lambda: known() == 2, 15, "the cancel reached the scheduler")
    go.touch()
    ex.wait(busy + [queued], timeout=30)
    assert queued.state is TaskState.CANCELLED
    assert [b.state for b in busy] == [TaskState.SUCCEEDED] * 2
    assert not (tmp_path / "mark").exists()


def test_a_value_that_cannot_travel_is_one_line_at_dispatch(ex: Executor) -> None:
    import threading

    with pytest.raises(SpecError) as info:
        python(ex, "lock.acquire()", {"lock": threading.Lock()})
    assert str(info.value) == "cannot send 'lock' to a worker process: TypeError: cannot pickle '_thread.lock' object"


def test_a_large_value_is_fetched(ex: Executor) -> None:
    t = python(ex, "b'x' * 1_000_000").wait(30)
    assert t.state is TaskState.SUCCEEDED and t.value == b"x" * 1_000_000


def _worker_pid(t: Any) -> int:
    wait_until(lambda: t.output_buffer.read("stdout").strip() != "", 30, "the task started")
    return int(t.output_buffer.read("stdout").split()[0])


def test_a_killed_worker_fails_its_task_as_lost_or_retries_it(ex: Executor, dask_backend: Any) -> None:
    hold = "import os, ttasks_ipy\nprint(os.getpid(), flush=True)\nttasks_ipy.current_task().sleep(300)\n"
    t = python(ex, hold)
    pid = _worker_pid(t)
    os.kill(pid, signal.SIGKILL)
    t.wait(30)
    assert t.state is TaskState.FAILED
    assert t.reason.startswith("WorkerDied: lost (worker tcp://127.0.0.1:"), t.reason
    # with a retry, the task runs again on a live worker (the nanny restarts the killed one)
    once = "import os, ttasks_ipy\nprint(os.getpid(), flush=True)\nif not os.path.exists(mark):\n" \
           "    open(mark, 'w').close()\n    ttasks_ipy.current_task().sleep(300)\nos.getpid()\n"
    mark = f"/tmp/ttasks-dask-retry-{os.getpid()}"
    try:
        r = python(ex, once, {"mark": mark}, retries=1, backoff=0)
        os.kill(_worker_pid(r), signal.SIGKILL)
        r.wait(60)
        assert r.state is TaskState.SUCCEEDED, r.reason
        assert r.attempt == 2 and r.attempt_reasons[0].startswith("WorkerDied: lost (worker ")
    finally:
        if os.path.exists(mark):
            os.unlink(mark)
    wait_until(lambda: len(dask_backend.client.scheduler_info()["workers"]) == 2, 60, "the nanny restarted the worker")


def test_the_card_names_the_worker_and_links_the_dashboard(ex: Executor, dask_backend: Any, tmp_path: Path) -> None:
    from ttasks_ipy.views import task_card

    go = tmp_path / "go"
    t = command(ex, f"echo up; while [ ! -e {go} ]; do sleep 0.02; done")
    wait_until(lambda: t.where is not None, 30, "the task placed")
    html = task_card(t).render(t)
    assert 'on <span style="font-family:' in html and ">Dask worker tcp://127.0.0.1:" in html
    assert dask_backend.dashboard and f'<a href="{dask_backend.dashboard}" target="_blank"' in html
    go.touch()
    t.wait(30)


def test_without_dask_installed_a_dask_task_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ttasks_ipy.core.backends.dask import connect
    from ttasks_ipy.core.errors import BackendUnavailable

    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    with pytest.raises(BackendUnavailable) as info:
        connect("")
    assert str(info.value) == ("Dask tasks need dask.distributed, which is not installed: "
                               "pip install 'ttasks_ipy[dask]'")


def test_graph_tasks_on_dask_take_no_local_slot(dask_backend: Any, tmp_path: Path) -> None:
    from ttasks_ipy.core.graph import GraphNode, GraphRun
    from ttasks_ipy.syntax.runners import elsewhere

    ex = Executor(max_workers=1)  # one local slot: the two tasks meet only if the cluster runs both at once
    ex.add_backend(dask_backend)
    meet = ("import os, ttasks_ipy\nopen(os.path.join(d, me), 'w').close()\n"
            "while not os.path.exists(os.path.join(d, other)):\n    ttasks_ipy.current_task().sleep(0.02)\n")
    body = compile_body(meet, "<meet>")

    def node(me: str, other: str) -> GraphNode:
        return GraphNode(me, lambda up: elsewhere(PortablePython(body, {"d": str(tmp_path), "me": me, "other": other})),
                         kind="python", backend="dask")

    try:
        g = GraphRun(ex, "meeting", [node("a", "b"), node("b", "a")])
        g.start()
        assert g.wait(60).ok, g.error
    finally:
        ex.cancel_all()
        ex.timers.close()
        ex.supervisor.close()
        ex.reaper.close()


def _keys_on_scheduler(backend: Any, prefix: str) -> dict[str, list[str]]:
    """The scheduler's tasks whose key starts with ``prefix``, with the keys they depend on."""
    def read(dask_scheduler: Any, prefix: str = prefix) -> dict[str, list[str]]:
        return {str(k): sorted(str(d.key) for d in ts.dependencies)
                for k, ts in dask_scheduler.tasks.items() if str(k).startswith(prefix)}
    return backend.client.run_on_scheduler(read)


def test_a_graph_hands_its_edges_to_dask_and_lets_go_of_them_at_its_end(
        ex: Executor, dask_backend: Any, tmp_path: Path) -> None:
    from ttasks_ipy.core.graph import GraphNode, GraphRun
    from ttasks_ipy.syntax.runners import elsewhere

    go = tmp_path / "go"
    first = compile_body("41", "<a>")
    wait = compile_body("import os, ttasks_ipy\nwhile not os.path.exists(go):\n"
                        "    ttasks_ipy.current_task().sleep(0.02)\nout = up + 1\n", "<b>")

    def after_a(up: Any) -> Any:
        return elsewhere(PortablePython(wait, {"go": str(go), "up": up.a.value}))

    nodes = [GraphNode("a", lambda up: elsewhere(PortablePython(first, {})), kind="python", backend="dask"),
             GraphNode("b", after_a, deps=("a",), kind="python", backend="dask"),
             GraphNode("c", after_a, deps=("a",), kind="python", backend="dask")]
    g = GraphRun(ex, "edges", nodes).start()
    b, c = g.tasks["b"], g.tasks["c"]
    # the scheduler comes to know b and c as dependents of a's marker (a itself is over and released)
    wait_until(lambda: len(_keys_on_scheduler(dask_backend, "edges-")) == 3, 30, "b and c on the scheduler")
    keys = _keys_on_scheduler(dask_backend, "edges-")
    root = next(k for k, deps in keys.items() if not deps)
    assert sorted(deps for k, deps in keys.items() if k != root) == [[root], [root]]
    go.touch()
    assert g.wait(30).ok, g.error
    assert (b.value["out"], c.value["out"]) == (42, 42)
    # the marker was kept for a's dependents only: nothing is left on the cluster once the graph ended
    wait_until(lambda: not _keys_on_scheduler(dask_backend, "edges-"), 30, "the graph's keys released")


def test_a_burst_of_tasks_goes_out_together_and_a_cancel_on_the_way_stops_its_task(
        ex: Executor, dask_backend: Any, tmp_path: Path) -> None:
    body = compile_body("i * 2", "<burst>")
    tasks = [ex.submit(TaskSpec(PortablePython(body, {"i": i}), backend="dask")) for i in range(300)]
    mark = tmp_path / "ran"
    t = command(ex, f"touch {mark}", name="onitsway")
    assert ex.cancel(t)  # at once: it may not have reached the scheduler yet
    assert ex.wait(tasks, timeout=60)
    assert [x.value for x in tasks] == [i * 2 for i in range(300)]
    assert t.wait(30).state is TaskState.CANCELLED
    # once the scheduler has forgotten it, it can no longer run anywhere: it never ran
    wait_until(lambda: not _keys_on_scheduler(dask_backend, "onitsway-"), 30, "the cancelled key forgotten")
    assert executing(dask_backend) == 0 and not mark.exists()


def test_a_result_lost_with_its_worker_is_not_computed_again(ex: Executor, dask_backend: Any, tmp_path: Path) -> None:
    from ttasks_ipy.core.graph import GraphNode, GraphRun
    from ttasks_ipy.syntax.runners import elsewhere

    log, go = tmp_path / "runs.log", tmp_path / "go"
    first = compile_body("import os\nopen(log, 'a').write('ran\\n')\npid = os.getpid()\n", "<a>")
    hold = compile_body("import os, ttasks_ipy\nwhile not os.path.exists(go):\n"
                        "    ttasks_ipy.current_task().sleep(0.02)\n", "<b>")
    nodes = [GraphNode("a", lambda up: elsewhere(PortablePython(first, {"log": str(log)})), kind="python",
                       backend="dask"),
             GraphNode("b", lambda up: elsewhere(PortablePython(hold, {"go": str(go)})), deps=("a",),
                       kind="python", backend="dask")]
    g = GraphRun(ex, "relost", nodes).start()
    a, b = g.tasks["a"], g.tasks["b"]
    wait_until(lambda: b.state is TaskState.RUNNING, 30, "b running")
    # b was submitted after a's marker; a's worker dies: Dask computes again what it held that b needs
    os.kill(a.value["pid"], signal.SIGKILL)
    wait_until(lambda: len(dask_backend.client.scheduler_info()["workers"]) == 2, 60, "the nanny restarted the worker")
    go.touch()
    g.wait(60)
    wait_until(lambda: not _keys_on_scheduler(dask_backend, "relost-") and executing(dask_backend) == 0, 30,
               "the graph's keys released and nothing running on the cluster")
    assert log.read_text() == "ran\n", (b.state, b.reason)
