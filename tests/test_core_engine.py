"""The engine on its own (no IPython): states, events, executor, bash and Python runners."""
from __future__ import annotations

import os
import threading
import time

import pytest
from helpers import Recorder, no_process_left, wait_until

from ttasks_ipy.core import (
    BashRunner,
    CallRunner,
    EventBus,
    EventKind,
    Executor,
    InvalidTransition,
    PythonRunner,
    QueueFull,
    SpecError,
    TaskCancelled,
    TaskFailed,
    TaskNotDone,
    TaskSpec,
    TaskState,
    WaitInsideTask,
    WaitTimeout,
    bind,
    compile_body,
    current_task,
)
from ttasks_ipy.core.events import TaskEvent


@pytest.fixture
def ex():
    e = Executor(max_workers=4, grace=0.5)
    yield e
    e.shutdown()


def bash(cmd: str, **kw) -> TaskSpec:
    return TaskSpec(BashRunner(cmd, grace=kw.pop("grace", 0.5)), **kw)


def py(src: str, ns: dict | None = None, **kw) -> TaskSpec:
    ns = ns or {}
    body = compile_body(src, f"<test-{id(src)}>")
    return TaskSpec(PythonRunner(body, bind(body, ns), ns), **kw)


# ---- states -------------------------------------------------------------
def test_illegal_transition_names_task_and_states(ex):
    t = ex.submit(bash("true"), hold=True)
    with pytest.raises(InvalidTransition, match=r"task #\d+: cannot change from pending to running"):
        t.claim()
    ex.cancel(t)


def test_every_terminal_state_is_final_except_for_reset():
    from ttasks_ipy.core import TRANSITIONS

    for state in TaskState:
        if state.terminal:
            assert TRANSITIONS[state] == {TaskState.PENDING}


# ---- bash ---------------------------------------------------------------
def test_command_output_and_result(ex):
    rec = Recorder(ex)
    t = ex.submit(bash("echo out; echo err >&2; printf 'a\\rb'"))
    t.wait(10)
    assert t.status == "succeeded"
    assert t.result.output == "out\na\rb"  # \r kept
    assert t.result.stderr == "err\n"
    assert rec.kinds(t)[:2] == ["queued", "started"]
    assert rec.kinds(t)[-1] == "succeeded"


def test_failed_command_keeps_its_result(ex):
    t = ex.submit(bash("echo partial; exit 3"))
    t.wait(10)
    assert t.state is TaskState.FAILED
    assert t.reason == "exit status 3"
    assert t.result.returncode == 3 and t.result.output == "partial\n" and not t.result.ok


def test_background_grandchild_does_not_hold_the_task(ex):
    t0 = time.monotonic()
    t = ex.submit(bash("echo hi; sleep 300 &"))
    t.wait(10)
    assert time.monotonic() - t0 < 3
    assert t.result.output == "hi\n"
    no_process_left(t.pid, 5)


def test_cancel_returns_at_once_and_ends_a_tree_that_ignores_sigterm(ex):
    rec = Recorder(ex)
    t = ex.submit(bash("trap '' TERM; sleep 300 & sleep 300"))
    rec.wait_for(EventKind.STARTED, t)
    wait_until(lambda: t.pid is not None, 5, "process started")
    t0 = time.monotonic()
    assert t.cancel() is True
    assert time.monotonic() - t0 < 0.05
    assert t.status == "cancelled"
    no_process_left(t.pid, 0.5 + 3)
    assert rec.kinds(t).count("cancelled") == 1
    assert t.cancel() is False


def test_timeout_fails_with_reason_and_kills(ex):
    t = ex.submit(bash("sleep 30", timeout=0.3))
    t.wait(10)
    assert t.state is TaskState.FAILED and t.reason == "timed out after 0.3s"
    no_process_left(t.pid, 3)


def test_retries_then_success(ex, tmp_path):
    rec = Recorder(ex)
    flag = tmp_path / "flag"
    t = ex.submit(bash(f"test -f {flag} && echo ok || {{ touch {flag}; exit 1; }}", retries=2, backoff=0.05))
    t.wait(10)
    assert t.status == "succeeded" and t.attempt == 2 and t.result.output == "ok\n"
    assert rec.kinds(t).count("retrying") == 1


def test_retries_exhausted_and_timeouts_are_retried(ex):
    rec = Recorder(ex)
    t = ex.submit(bash("sleep 5", timeout=0.2, retries=2, backoff=0.01))
    t.wait(10)
    assert t.state is TaskState.FAILED and t.attempt == 3
    assert rec.kinds(t).count("retrying") == 2
    assert [k for k in rec.kinds(t) if k in ("succeeded", "failed", "cancelled")] == ["failed"]


def test_cancel_is_never_retried(ex):
    rec = Recorder(ex)
    t = ex.submit(bash("sleep 5", retries=3, backoff=0))
    wait_until(lambda: t.pid is not None, 5)
    t.cancel()
    no_process_left(t.pid, 3)  # the attempt's own end has come and gone
    assert t.status == "cancelled" and t.attempt == 1
    assert "retrying" not in rec.kinds(t)


def test_stall_is_marked_and_cleared(ex):
    rec = Recorder(ex)
    t = ex.submit(bash("echo a; sleep 0.6; echo b", stall=0.2))
    ev = rec.wait_for(EventKind.STALLED, t)
    assert ev.data["stalled"] is True
    t.wait(10)
    stalls = [e.data["stalled"] for e in rec.events if e.task is t and e.kind is EventKind.STALLED]
    # marked in the quiet 0.6 s, cleared by "b" (on a busy machine "a" itself can come after 0.2 s: a pair more)
    assert len(stalls) in (2, 4) and stalls == [True, False] * (len(stalls) // 2), stalls
    assert t.status == "succeeded"


def test_cap_is_never_exceeded_and_everything_finishes():
    ex = Executor(max_workers=4)
    running = 0
    peak = 0
    lock = threading.Lock()

    def on(ev: TaskEvent) -> None:
        nonlocal running, peak
        with lock:
            if ev.kind is EventKind.STARTED:
                running += 1
                peak = max(peak, running)
            elif ev.kind.terminal:
                running -= 1

    ex.bus.subscribe(on)
    tasks = [ex.submit(py("import time\ntime.sleep(0.01)")) for _ in range(100)]
    ex.wait(tasks, timeout=30)
    assert all(t.status == "succeeded" for t in tasks)
    assert peak == 4
    ex.shutdown()


def test_max_workers_lowered_takes_slots_away_as_they_come_back_and_raised_starts_at_once():
    ex = Executor(max_workers=3)
    gates = [threading.Event() for _ in range(6)]
    tasks = [ex.submit(TaskSpec(CallRunner(g.wait, (30,)))) for g in gates]
    try:
        assert [t.status for t in tasks] == ["running"] * 3 + ["queued"] * 3
        ex.set_max_workers(1)
        for i in (0, 1):  # two of the three running end: their slots go away
            gates[i].set()
            tasks[i].wait(10)
        assert ex.statistics().running == 1
        assert [t.status for t in tasks[2:]] == ["running", "queued", "queued", "queued"]
        gates[2].set()  # the one slot left passes to the next queued task, and only to it
        tasks[2].wait(10)
        assert [t.status for t in tasks[3:]] == ["running", "queued", "queued"]
        assert ex.statistics().running == 1
        ex.set_max_workers(3)  # the new slots are filled before it returns
        assert [t.status for t in tasks[3:]] == ["running"] * 3
        assert ex.statistics().running == 3
        for g in gates:
            g.set()
        ex.wait(tasks, timeout=10)
        assert all(t.status == "succeeded" for t in tasks)
        assert ex.statistics().running == 0
    finally:
        for g in gates:
            g.set()
        ex.shutdown()


def test_reject_policy():
    ex = Executor(max_workers=1, queue_policy="reject")
    t = ex.submit(bash("sleep 5"))
    with pytest.raises(QueueFull, match="all 1 workers are busy"):
        ex.submit(bash("true"))
    t.cancel()
    ex.shutdown()


def test_queued_task_cancelled_never_starts(ex):
    ex.set_max_workers(1)
    a = ex.submit(bash("sleep 5"))
    b = ex.submit(bash("echo never"))
    assert b.status == "queued"
    b.cancel()
    a.cancel()
    assert b.started is None and b.status == "cancelled"


def test_name_unique_among_active_and_replace(ex):
    a = ex.submit(bash("sleep 5", name="fit"))
    with pytest.raises(SpecError, match="a task named 'fit' is"):
        ex.submit(bash("true", name="fit"))
    b = ex.submit(bash("true", name="fit"), replace=True)
    assert a.status == "cancelled" and a.reason == "replaced"
    assert ex.get("fit") is b


def test_service_takes_no_worker_slot_and_emits_ready(ex):
    rec = Recorder(ex)
    ex.set_max_workers(1)
    svc = ex.submit(TaskSpec(BashRunner("echo starting; echo 'Serving HTTP on x'; sleep 30", grace=0.5),
                             service=True, ready="Serving HTTP"))
    ev = rec.wait_for(EventKind.READY, svc)
    assert ev.data["line"] == "Serving HTTP on x"
    t = ex.submit(bash("echo side"))
    t.wait(10)
    assert t.status == "succeeded" and svc.status == "running"


# ---- python -------------------------------------------------------------
def test_python_statements_assign_and_read_bound_names(ex):
    ns = {"n": 3}
    t = ex.submit(py("def f(k):\n    return [k * i for i in range(n)]\ny = f(2)", ns))
    ns["n"] = 100  # bound at dispatch: the task still sees 3
    t.wait(10)
    assert t.result["y"] == [0, 2, 4]


def test_python_print_goes_to_the_task(ex):
    t = ex.submit(py("print('from the task')"))
    t.wait(10)
    assert t.output == "from the task\n"


def test_python_exception_traceback_names_the_body_line(ex):
    t = ex.submit(py("x = 1\ny = x / 0"))
    t.wait(10)
    assert t.state is TaskState.FAILED
    assert t.error == "ZeroDivisionError: division by zero"
    assert "line 2" in t.traceback and "executor.py" not in t.traceback
    with pytest.raises(TaskFailed, match="division by zero"):
        t.result


def test_python_top_level_await(ex):
    t = ex.submit(py("import asyncio\nawait asyncio.sleep(0.01)\nz = 5"))
    assert t.wait(10).result["z"] == 5


def test_python_cancel_cooperative_and_busy_loop(ex):
    rec = Recorder(ex)
    t = ex.submit(py("while True:\n    pass"))
    rec.wait_for(EventKind.STARTED, t)
    t.cancel()
    assert t.status == "cancelled"
    wait_until(lambda: ex.statistics().lingering == 0, 5, "busy loop interrupted")

    seen = []

    def job():
        ctx = current_task()
        while True:
            seen.append(ctx.cancelled)
            ctx.sleep(0.05)

    t2 = ex.submit(TaskSpec(CallRunner(job)))
    rec.wait_for(EventKind.STARTED, t2)
    t2.cancel()
    wait_until(lambda: ex.statistics().lingering == 0, 5, "cooperative stop")


def test_async_body_cancel(ex):
    rec = Recorder(ex)
    t = ex.submit(py("import asyncio\nawait asyncio.sleep(30)"))
    rec.wait_for(EventKind.STARTED, t)
    t.cancel()
    wait_until(lambda: ex.statistics().lingering == 0, 5, "coroutine cancelled")


def test_result_before_done_and_wait_timeout(ex):
    t = ex.submit(bash("sleep 5"))
    with pytest.raises(TaskNotDone, match="wait for it first"):
        t.result
    with pytest.raises(WaitTimeout):
        t.wait(0.05)
    t.cancel()
    with pytest.raises(TaskCancelled):
        t.result


def test_waiting_inside_a_task_is_refused(ex):
    other = ex.submit(bash("sleep 5"))

    def job():
        other.wait(1)

    t = ex.submit(TaskSpec(CallRunner(job)))
    t.wait(10)
    assert isinstance(t.exception, WaitInsideTask)
    other.cancel()


def test_wait_any(ex):
    slow = ex.submit(bash("sleep 5"))
    fast = ex.submit(bash("true"))
    done = ex.wait([slow, fast], timeout=10, return_when="any")
    assert done == [fast]
    slow.cancel()


def test_finish_cancel_race_has_one_terminal_event():
    ex = Executor(max_workers=8)
    rec = Recorder(ex)
    tasks = []
    for i in range(200):
        t = ex.submit(TaskSpec(CallRunner(lambda: None)))
        t.cancel()
        tasks.append(t)
    ex.wait(tasks, timeout=30)
    for t in tasks:
        terminals = [k for k in rec.kinds(t) if k in ("succeeded", "failed", "cancelled")]
        assert len(terminals) == 1, terminals
    assert ex.statistics().running == 0
    ex.shutdown()


# ---- events and output --------------------------------------------------
def test_a_failing_subscriber_harms_nobody(ex):
    got = []
    ex.bus.subscribe(lambda ev: 1 / 0)
    ex.bus.subscribe(lambda ev: got.append(ev.kind))
    t = ex.submit(bash("echo x"))
    t.wait(10)
    assert t.status == "succeeded" and EventKind.SUCCEEDED in got


def test_background_subscriber_does_not_slow_the_task():
    bus = EventBus()
    ex = Executor(bus=bus)
    slow_seen = []
    bus.subscribe(lambda ev: (time.sleep(0.2), slow_seen.append(ev)), background=True)
    t0 = time.monotonic()
    ex.submit(bash("for i in $(seq 20); do echo $i; done")).wait(10)
    assert time.monotonic() - t0 < 2
    ex.shutdown()


def test_output_tail_is_bounded_and_file_capped(tmp_path):
    ex = Executor(tail_chars=1000, file_cap=50_000, output_dir=tmp_path)
    t = ex.submit(bash("yes 0123456789 | head -c 2000000"))
    t.wait(30)
    assert len(t.output_buffer.tail()) == 1000
    assert os.path.getsize(tmp_path / str(t.id) / "stdout.txt") < 50_100
    assert "[output truncated at the file cap]" in t.output
    assert t.output_buffer.total_chars() == 2_000_000
    ex.shutdown()


def test_output_files_are_private(ex):
    t = ex.submit(bash("echo secret"))
    t.wait(10)
    assert os.stat(ex.output_dir).st_mode & 0o077 == 0
    assert os.stat(ex.output_dir / str(t.id) / "stdout.txt").st_mode & 0o077 == 0


def test_after_dependencies_run_in_order_and_block(ex):
    a = ex.submit(bash("echo a"))
    b = ex.submit(bash("echo b"), after=[a])
    bad = ex.submit(bash("exit 1"))
    c = ex.submit(bash("echo c"), after=[bad])
    ex.wait([b, c], timeout=10)
    assert b.status == "succeeded" and b.started >= a.finished
    assert c.status == "blocked" and c.blocked_by == [bad.label]


def test_shutdown_ends_everything():
    ex = Executor(grace=0.3)
    t = ex.submit(bash("trap '' TERM; sleep 300"))
    wait_until(lambda: t.pid is not None, 5)
    ex.shutdown()
    assert t.status == "cancelled"
    no_process_left(t.pid, 3)


def test_profilers_and_tracers_still_work_after_python_tasks():
    """Interrupting a thread task must leave no pending async-exception flag behind (it hangs tracers)."""
    import subprocess
    import sys

    script = (
        "import cProfile, sys, time\n"
        "from ttasks_ipy.core import Executor, TaskSpec, PythonRunner, compile_body\n"
        "ex = Executor(max_workers=2)\n"
        "ex.submit(TaskSpec(PythonRunner(compile_body('x = 1', '<a>'), {}, {}))).wait(10)\n"
        "cProfile.run('sum(range(10))', '/dev/null')\n"
        "t = ex.submit(TaskSpec(PythonRunner(compile_body('while True:\\n    pass', '<b>'), {}, {})))\n"
        "while t.status != 'running': time.sleep(0.01)\n"
        "t.cancel()\n"
        "while ex.statistics().lingering: time.sleep(0.01)\n"
        "sys.settrace(lambda *a: None); sum(range(10)); sys.settrace(None)\n"
        "cProfile.run('sum(range(10))', '/dev/null')\n"
        "ex.shutdown(); print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_cancel_is_not_swallowed_by_except_exception(ex):
    rec = Recorder(ex)
    t = ex.submit(py("while True:\n    try:\n        sum(range(100))\n    except Exception:\n        pass"))
    rec.wait_for(EventKind.STARTED, t)
    t.cancel()
    wait_until(lambda: ex.statistics().lingering == 0, 5, "the loop was stopped")


def test_a_command_that_starts_with_a_dash_is_a_command_not_a_shell_option(ex):
    t = ex.submit(TaskSpec(BashRunner("-x; echo after")))
    assert t.wait(10)
    assert "-x: command not found" in t.result.stderr
    assert t.result.output == "after\n"


def test_every_event_record_is_the_full_snapshot_of_its_moment(monkeypatch):
    """A change builds its record from the last one (the fields it moved); it must equal a full snapshot."""
    from ttasks_ipy.core.task import Task

    change, checked = Task._change, []

    def checking(self, *args, **kwargs):
        ev = change(self, *args, **kwargs)  # still under the task's lock: nothing else moved meanwhile
        assert ev.record == self._snapshot(), (ev.kind, ev.record, self._snapshot())
        checked.append(ev.kind)
        return ev

    monkeypatch.setattr(Task, "_change", checking)
    e = Executor(max_workers=2, grace=0.5)
    try:
        gate = threading.Event()

        def report() -> int:
            ctx = current_task()
            ctx.progress(40, "half")
            gate.wait(10)
            return 1

        tasks = [
            e.submit(TaskSpec(CallRunner(report), name="progress")),
            e.submit(py("1 / 0")),
            e.submit(bash("echo out; exit 3")),
            e.submit(bash("sleep 30", timeout=0.3)),
            e.submit(bash("exit 1", retries=1, backoff=0)),
            e.submit(bash("sleep 30", name="queued_then_cancelled")),
        ]
        blocked = e.submit(bash("true"), after=[tasks[1]])
        wait_until(lambda: tasks[0].progress == (40, "half"), 10)
        tasks[5].cancel()
        gate.set()
        e.wait([*tasks, blocked], timeout=30)
        running = e.submit(bash("sleep 30"))
        wait_until(lambda: running.status == "running", 10)
        running.cancel()
        e.wait([running], timeout=10)
        e.reset(tasks[0])
        e.release(tasks[0])
        gate.set()
        e.wait([tasks[0]], timeout=10)
    finally:
        e.shutdown()
    assert {EventKind.STARTED, EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED, EventKind.BLOCKED,
            EventKind.QUEUED, EventKind.PENDING} <= set(checked)
