"""The graph engine (``ttasks_ipy.core.graph``) in a plain process: real bash and Python runners."""
from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttasks_ipy.core import (
    BashRunner,
    EventKind,
    Executor,
    PythonRunner,
    SpecError,
    SyncBackend,
    TaskNotDone,
    TaskSpec,
    TaskState,
    WaitTimeout,
    bind,
    compile_body,
)
from ttasks_ipy.core.graph import GraphNode, GraphRun, Upstream, UpstreamResult, check_graph

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ex() -> Iterator[Executor]:
    e = Executor(max_workers=4, grace=0.5)
    yield e
    e.shutdown()


@pytest.fixture(params=["threads", "sync"])
def ex_any(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """An executor with threads, and one that runs each attempt inline (deterministic order)."""
    e = Executor(max_workers=4, grace=0.5, backend=SyncBackend() if request.param == "sync" else None)
    yield e
    e.shutdown()


def py(source: str, namespace: dict[str, Any] | None = None):
    """A runner factory for a Python body: names bound now, ``upstream`` at release."""
    ns = namespace if namespace is not None else {}
    body = compile_body(source, f"<test {source[:20]}>")
    bound = bind(body, ns)
    return lambda up: PythonRunner(body, {**bound, "upstream": up}, ns)


def sh(command: str) -> BashRunner:
    return BashRunner(command, grace=0.5)


def states(g: GraphRun) -> dict[str, str]:
    return {name: t.status for name, t in g.tasks.items()}


def on_event(ex: Executor, label: str, kind: EventKind) -> threading.Event:
    """An Event set when task ``label`` publishes ``kind``."""
    seen = threading.Event()
    ex.bus.subscribe(lambda ev: seen.set() if ev.task.label == label else None, [kind])
    return seen


# ---- the user stories ---------------------------------------------------------
def test_failing_test_blocks_downstream_and_report_still_runs(ex_any: Executor) -> None:
    g = GraphRun(ex_any, "pipeline", [
        GraphNode("build", sh("echo built")),
        GraphNode("lint", sh("true")),
        GraphNode("test", sh("echo 2 failed; exit 1"), deps=("build",)),
        GraphNode("deploy", sh("echo deploying"), deps=("test",)),
        GraphNode("publish", sh("echo publishing"), deps=("deploy",)),
        GraphNode("report", py("{n: r.status for n, r in upstream.items()}"), deps=("lint", "test"), finally_=True),
    ])
    assert g.start() is g
    g.wait(20)
    assert g.status == "done" and g.done()
    assert states(g) == {
        "build": "succeeded", "lint": "succeeded", "test": "failed",
        "deploy": "blocked", "publish": "blocked", "report": "succeeded",
    }
    assert g.deploy.blocked_by == ["test"]
    assert g.publish.blocked_by == ["deploy"]
    assert g["report"].result == {"lint": "succeeded", "test": "failed"}
    assert g.ok is False
    assert "test failed (exit status 1)" in (g.error or "")
    assert g.test.label == "pipeline.test"
    assert g.statistics().blocked == 2 and g.statistics().finished == 6


def test_everything_succeeds_ok_true(ex: Executor) -> None:
    g = GraphRun(ex, "g", [GraphNode("a", sh("true")), GraphNode("b", sh("true"), deps=("a",))]).start()
    assert g.ok is False or g.done()  # never True before done
    g.wait(10)
    assert g.ok is True and g.error is None
    assert g.state is TaskState.SUCCEEDED


def test_optional_finally_failure_leaves_ok_true(ex_any: Executor) -> None:
    g = GraphRun(ex_any, "g", [
        GraphNode("work", sh("echo ok")),
        GraphNode("notify", sh("exit 7"), deps=("work",), finally_=True, optional=True),
    ]).start().wait(10)
    assert g.notify.status == "failed"
    assert g.ok is True


def test_required_finally_failure_makes_ok_false(ex_any: Executor) -> None:
    g = GraphRun(ex_any, "g", [
        GraphNode("work", sh("true")),
        GraphNode("cleanup", sh("exit 3"), deps=("work",), finally_=True),
    ]).start().wait(10)
    assert g.ok is False and "cleanup failed" in (g.error or "")


def test_finally_runs_after_cancel(ex: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    started = on_event(ex, "g.slow", EventKind.STARTED)
    other_started = on_event(ex, "g.other", EventKind.STARTED)
    g = GraphRun(ex, "g", [
        GraphNode("slow", sh("sleep 30")),
        GraphNode("after_slow", sh("echo never"), deps=("slow",)),
        GraphNode("other", sh("sleep 30")),
        GraphNode("cleanup", sh(f"echo cleaning > {marker}"), deps=("slow", "after_slow"), finally_=True),
    ]).start()
    assert started.wait(10) and other_started.wait(10)
    t0 = time.monotonic()
    assert g.cancel() is True
    assert time.monotonic() - t0 < 0.5  # returns at once
    assert g.slow.state is TaskState.CANCELLED  # visible at once
    g.wait(10)
    assert states(g) == {"slow": "cancelled", "after_slow": "blocked", "other": "cancelled", "cleanup": "succeeded"}
    assert marker.read_text() == "cleaning\n"
    assert g.ok is False and g.reason == "graph g cancelled"
    assert g.cancel() is False  # already done


def test_cancel_blocks_pending_tasks_under_max_parallel(ex: Executor) -> None:
    started = on_event(ex, "g.a", EventKind.STARTED)
    g = GraphRun(ex, "g", [
        GraphNode("a", sh("sleep 30")),
        GraphNode("b", sh("sleep 30")),
        GraphNode("c", sh("sleep 30")),
        GraphNode("last", py("1"), deps=("a", "b", "c"), finally_=True),
    ], max_parallel=1).start()
    assert started.wait(10)
    g.cancel()
    g.wait(10)
    assert states(g) == {"a": "cancelled", "b": "blocked", "c": "blocked", "last": "succeeded"}
    assert g.b.blocked_by == ["g"]


def test_cancel_force_also_stops_a_hanging_finally(ex: Executor) -> None:
    started = on_event(ex, "g.cleanup", EventKind.STARTED)
    g = GraphRun(ex, "g", [
        GraphNode("work", sh("true")),
        GraphNode("cleanup", sh("sleep 30"), deps=("work",), finally_=True),
    ]).start()
    assert started.wait(10)
    g.cancel()  # spares the finally task
    with pytest.raises(WaitTimeout):
        g.wait(0.3)
    assert g.cleanup.state is TaskState.RUNNING
    g.cancel(force=True)
    g.wait(10)
    assert g.cleanup.status == "cancelled"


def test_cancelling_one_task_blocks_its_dependents(ex: Executor) -> None:
    started = on_event(ex, "g.a", EventKind.STARTED)
    g = GraphRun(ex, "g", [
        GraphNode("a", sh("sleep 30")),
        GraphNode("b", sh("true"), deps=("a",)),
        GraphNode("fin", py("upstream.a.status"), deps=("a",), finally_=True),
    ]).start()
    assert started.wait(10)
    g.a.cancel("by hand")
    g.wait(10)
    assert states(g) == {"a": "cancelled", "b": "blocked", "fin": "succeeded"}
    assert g.fin.result == "cancelled"


def test_graph_timeout_stops_it_and_finally_runs(ex: Executor) -> None:
    g = GraphRun(ex, "g", [
        GraphNode("slow", sh("sleep 30")),
        GraphNode("next", sh("true"), deps=("slow",)),
        GraphNode("cleanup", py("'cleaned after ' + upstream.slow.status"), deps=("slow",), finally_=True),
    ], timeout=0.5).start()
    t0 = time.monotonic()
    g.wait(10)
    assert time.monotonic() - t0 < 5
    assert states(g) == {"slow": "cancelled", "next": "blocked", "cleanup": "succeeded"}
    assert g.cleanup.result == "cleaned after cancelled"
    assert g.reason == "graph g timed out after 0.5s"
    assert g.ok is False and "timed out" in (g.error or "")


def test_rerun_keeps_successes_and_reruns_the_rest(ex_any: Executor, tmp_path: Path) -> None:
    log = tmp_path / "log"
    flag = tmp_path / "fixed"
    g = GraphRun(ex_any, "g", [
        GraphNode("build", sh(f"echo build >> {log}")),
        GraphNode("lint", sh(f"echo lint >> {log}")),
        GraphNode("test", sh(f"echo test >> {log}; test -e {flag}"), deps=("build",)),
        GraphNode("deploy", sh(f"echo deploy >> {log}"), deps=("test",)),
        GraphNode("report", sh(f"echo report >> {log}"), deps=("lint", "test"), finally_=True),
        GraphNode("lint_note", sh(f"echo lint_note >> {log}"), deps=("lint",), finally_=True),
    ]).start().wait(10)
    assert not g.ok and g.deploy.status == "blocked"
    build_task = g.build
    with pytest.raises(SpecError):
        g.start()
    flag.touch()
    assert g.rerun() is g
    g.wait(10)
    assert g.ok
    assert g.build is build_task  # same handles
    runs = log.read_text().split()
    assert sorted(runs[:5]) == sorted(["build", "lint", "test", "report", "lint_note"])
    # second run: test failed -> rerun; deploy blocked -> rerun; report is finally after test -> rerun
    assert sorted(runs[5:]) == ["deploy", "report", "test"]
    assert g.rerun() is g and g.done()  # nothing left to rerun


def test_rerun_refused_while_running(ex: Executor) -> None:
    g = GraphRun(ex, "g", [GraphNode("a", sh("sleep 30"))])
    with pytest.raises(TaskNotDone, match="start"):
        g.rerun()
    g.start()
    with pytest.raises(TaskNotDone, match="wait for it or cancel"):
        g.rerun()
    g.cancel()
    g.wait(10)
    g.rerun()
    assert g.status == "running"
    g.cancel()
    g.wait(10)


def test_rerun_after_cancel_runs_cancelled_and_blocked(ex: Executor, tmp_path: Path) -> None:
    flag = tmp_path / "quick"
    started = on_event(ex, "g.a", EventKind.STARTED)
    g = GraphRun(ex, "g", [
        GraphNode("a", sh(f"test -e {flag} || sleep 30")),
        GraphNode("b", py("'b ran'"), deps=("a",)),
    ]).start()
    assert started.wait(10)
    g.cancel()
    g.wait(10)
    flag.touch()
    g.rerun().wait(10)
    assert g.ok and g.b.result == "b ran" and g.reason is None


# ---- upstream ---------------------------------------------------------------------
def test_upstream_values_reach_python_bodies(ex_any: Executor) -> None:
    ns = {"factor": 10}
    g = GraphRun(ex_any, "g", [
        GraphNode("numbers", py("[1, 2, 3]")),
        GraphNode("stats", py("total = sum(upstream.numbers.value) * factor", ns), deps=("numbers",)),
        GraphNode("listing", sh("printf 'a\\nb\\n'")),
        GraphNode("broken", sh("echo partial; echo oops >&2; exit 4")),
        GraphNode("summary", py(
            "(upstream['stats'].value, upstream.listing.output.split(), upstream.listing.returncode,"
            " upstream.broken.returncode, upstream.broken.output, upstream.broken.stderr, upstream.broken.error,"
            " upstream.stats.returncode, upstream.stats.ok, upstream.broken.ok, sorted(upstream))"
        ), deps=("stats", "listing", "broken"), finally_=True),
    ]).start().wait(10)
    assert g.summary.result == (
        60, ["a", "b"], 0, 4, "partial\n", "oops\n", "exit status 4", None, True, False,
        ["broken", "listing", "stats"],
    )


def test_upstream_is_bound_at_release_not_at_build(ex: Executor) -> None:
    calls: list[list[str]] = []

    def factory(up: Upstream):
        calls.append([up[n].status for n in up])
        return PythonRunner(compile_body("upstream.first.value + 1", "<t>"), {"upstream": up}, {})

    g = GraphRun(ex, "g", [GraphNode("first", py("41")), GraphNode("second", factory, deps=("first",))])
    g.start().wait(10)
    assert calls == [["succeeded"]]
    assert g.second.result == 42


def test_upstream_errors_name_the_dependencies(ex: Executor) -> None:
    g = GraphRun(ex, "g", [
        GraphNode("build", py("1")),
        GraphNode("report", py("upstream.biuld"), deps=("build",), finally_=True),
    ]).start().wait(10)
    assert g.report.status == "failed"
    assert "upstream of report has no 'biuld' (it runs after build): did you mean 'build'?" in g.report.error


def test_upstream_pickles_as_plain_results(ex: Executor) -> None:
    t = ex.submit(TaskSpec(sh("echo hi")))
    t.wait(10)
    up = Upstream("x", {"hi": t})
    again = pickle.loads(pickle.dumps(up))
    assert again.hi == UpstreamResult.of("hi", t)
    assert again.hi.output == "hi\n" and again.hi.returncode == 0 and str(again.hi.value) == "hi\n"
    assert "hi=succeeded" in repr(again)
    with pytest.raises(AttributeError, match="no 'nope'"):
        _ = again.nope


def test_a_factory_that_raises_fails_its_task(ex: Executor) -> None:
    def bad(up: Upstream):
        raise SpecError("{missing}: name 'missing' is not defined")

    g = GraphRun(ex, "g", [
        GraphNode("a", bad, kind="bash"),
        GraphNode("b", sh("true"), deps=("a",)),
    ]).start().wait(10)
    assert states(g) == {"a": "failed", "b": "blocked"}
    assert "missing" in g.a.error


def test_retries_inside_a_graph(ex: Executor, tmp_path: Path) -> None:
    count = tmp_path / "count"
    cmd = f"echo x >> {count}; test $(wc -l < {count}) -ge 2"
    g = GraphRun(ex, "g", [GraphNode("flaky", sh(cmd), retries=2, backoff=0.01)]).start().wait(10)
    assert g.ok and g.flaky.attempt == 2


# ---- parallelism and scale ---------------------------------------------------------
def test_independent_tasks_run_in_parallel_up_to_max_parallel(ex: Executor) -> None:
    ex.set_max_workers(8)
    gate = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, max
    two = threading.Event()
    three = threading.Event()

    def track(ev: Any) -> None:
        if not (ev.task.name or "").startswith("g."):
            return
        with lock:
            if ev.kind is EventKind.STARTED:
                running[0] += 1
                running[1] = max(running[1], running[0])
            else:
                running[0] -= 1
            if running[0] >= 2:
                two.set()
            if running[0] >= 3:
                three.set()

    ex.bus.subscribe(track, [EventKind.STARTED, EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED])
    ns = {"gate": gate}
    nodes = [GraphNode(f"t{i}", py("gate.wait(10)", ns)) for i in range(6)]
    g = GraphRun(ex, "g", nodes, max_parallel=2).start()
    assert two.wait(10)
    assert not three.wait(0.3)  # a third would start at once if the limit leaked
    assert g.statistics().running == 2
    gate.set()
    g.wait(10)
    assert g.ok and running[1] == 2


def test_without_max_parallel_independent_tasks_overlap(ex: Executor) -> None:
    barrier = threading.Barrier(3, timeout=10)
    ns = {"barrier": barrier}
    g = GraphRun(ex, "g", [GraphNode(f"t{i}", py("barrier.wait()", ns)) for i in range(3)]).start()
    g.wait(15)
    assert g.ok  # all three were running together, or the barrier would have broken


def test_ten_thousand_noop_tasks_schedule_in_linear_time(ex: Executor) -> None:
    body = compile_body("None", "<noop>")

    def noop(up: Upstream):
        return PythonRunner(body, {"upstream": up}, {})

    n, width = 10_000, 100

    def deps(i: int) -> tuple[str, ...]:  # 100 layers of 100; each node after two of the layer before
        return tuple(f"n{j}" for j in (i - width, i - width + 1) if j >= 0 and j // width == i // width - 1)

    nodes = [GraphNode(f"n{i}", noop, deps=deps(i)) for i in range(n)]
    t0 = time.perf_counter()
    g = GraphRun(ex, "big", nodes)
    g.start()
    t_start = time.perf_counter() - t0
    g.wait(60)
    total = time.perf_counter() - t0
    assert g.ok and g.statistics().succeeded == n
    assert t_start < 5 and total < 30, (t_start, total)


# ---- the handle --------------------------------------------------------------------
def test_handle_access_and_waits(ex: Executor) -> None:
    g = GraphRun(ex, "g", [GraphNode("a", sh("sleep 30")), GraphNode("b", py("1"), deps=("a",))])
    assert g.status == "pending" and g.state is TaskState.PENDING and g.tasks == {}
    with pytest.raises(TaskNotDone):
        g.wait(1)
    with pytest.raises(TaskNotDone):
        _ = g["a"]
    g.start()
    assert g.status == "running" and g.ok is False and g.error is None
    assert list(g.tasks) == ["a", "b"] and g.a is g["a"] is g.tasks["a"]
    assert g.dependents("a") == ["b"] and "a" in g and "z" not in g
    with pytest.raises(KeyError, match="did you mean 'a'"):
        _ = g["aa"]
    with pytest.raises(AttributeError):
        _ = g.zzz
    with pytest.raises(WaitTimeout, match="not finished: a, b"):
        g.wait(0.2)
    assert repr(g) == "<GraphRun g running: 1 running, 1 pending>"
    g.cancel()
    g.wait(10)
    assert g.state is TaskState.FAILED


def test_executor_shutdown_ends_a_running_graph(tmp_path: Path) -> None:
    e = Executor(max_workers=2, grace=0.5)
    started = on_event(e, "g.slow", EventKind.STARTED)
    g = GraphRun(e, "g", [
        GraphNode("slow", sh("sleep 30")),
        GraphNode("cleanup", sh(f"touch {tmp_path}/ran"), deps=("slow",), finally_=True),
    ]).start()
    assert started.wait(10)
    e.shutdown()
    g.wait(10)
    assert states(g) == {"slow": "cancelled", "cleanup": "cancelled"}  # nothing starts after shutdown
    assert not (tmp_path / "ran").exists()


def test_a_graph_can_be_an_after_dependency(ex: Executor) -> None:
    good = GraphRun(ex, "good", [GraphNode("a", py("1"))])
    bad = GraphRun(ex, "bad", [GraphNode("a", sh("exit 1"))])
    t_good = ex.submit(TaskSpec(sh("echo after good")), after=[good])
    t_bad = ex.submit(TaskSpec(sh("echo after bad")), after=[bad])
    done: list[str] = []
    good.add_done_callback(lambda g: done.append(g.name))
    good.start()
    bad.start()
    ex.wait([t_good, t_bad], timeout=10)
    assert t_good.status == "succeeded"
    assert t_bad.status == "blocked" and t_bad.blocked_by == ["bad"]
    assert done == ["good"]
    good.add_done_callback(lambda g: done.append("late"))
    assert done == ["good", "late"]


# ---- bad descriptions ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([("a", ("b",)), ("b", ("a",))], "dependency cycle: a -> b -> a"),
        ([("a", ("c",)), ("b", ("a",)), ("c", ("b",)), ("d", ())], "dependency cycle: a -> b -> c -> a"),
        ([("a", ("a",))], "dependency cycle: a -> a"),
        ([("build", ()), ("test", ("bild",))],
         "task test runs after 'bild', which is not a task of this graph: did you mean 'build'?"),
        ([("a", ()), ("a", ())], "duplicate task name a"),
        ([], "the graph has no tasks"),
    ],
)
def test_bad_graphs_are_refused(ex: Executor, nodes: list[tuple[str, tuple[str, ...]]], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("?", r"\?").replace("(", r"\(")):
        GraphRun(ex, "g", [GraphNode(n, sh("true"), deps=d) for n, d in nodes])
    assert ex.tasks() == []  # nothing submitted


def test_bad_nodes_and_options_are_refused(ex: Executor) -> None:
    with pytest.raises(SpecError, match="optional but not finally"):
        GraphNode("a", sh("true"), optional=True)
    with pytest.raises(SpecError, match="lists dependency b twice"):
        GraphNode("a", sh("true"), deps=("b", "b"))
    with pytest.raises(SpecError, match="not usable"):
        GraphNode("my-task", sh("true"))
    with pytest.raises(SpecError, match="taken by the graph handle"):
        GraphRun(ex, "g", [GraphNode("wait", sh("true"))])
    with pytest.raises(SpecError, match="timeout must be a positive"):
        GraphRun(ex, "g", [GraphNode("a", sh("true"))], timeout=0)
    with pytest.raises(SpecError, match="max_parallel must be"):
        GraphRun(ex, "g", [GraphNode("a", sh("true"))], max_parallel=0)
    with pytest.raises(SpecError, match="graph name"):
        GraphRun(ex, "not a name", [GraphNode("a", sh("true"))])


def test_check_graph_returns_an_order_that_runs_dependencies_first() -> None:
    order = check_graph([
        GraphNode("c", sh("true"), deps=("b",)), GraphNode("b", sh("true"), deps=("a",)), GraphNode("a", sh("true")),
    ])
    assert order == ["a", "b", "c"]
