"""The backend interface and its implementations: reused threads, the synchronous backend, worker processes."""
from __future__ import annotations

import cProfile
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Recorder, wait_until

from ttasks_ipy.core import (
    BashRunner,
    CallRunner,
    EventKind,
    Executor,
    Job,
    JobEvents,
    Runner,
    SyncBackend,
    TaskContext,
    TaskSpec,
    TaskState,
    ThreadBackend,
    compile_body,
    current_task,
)
from ttasks_ipy.core.backends.process.backend import ProcessBackend
from ttasks_ipy.core.backends.process.pool import WorkerPool
from ttasks_ipy.core.runners.portable import PortablePython

pytestmark = pytest.mark.timeout(60)


class Collect(JobEvents):
    """JobEvents that keep what they get and say when the job finished."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, str]] = []
        self.progress_seen: list[tuple[float | None, str | None]] = []
        self.where: list[tuple[str | None, int | None]] = []
        self.ended = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.calls = 0

    def output(self, stream: str, text: str) -> None:
        self.outputs.append((stream, text))

    def progress(self, percent: float | None, message: str | None) -> None:
        self.progress_seen.append((percent, message))

    def placed(self, where: str | None, pid: int | None) -> None:
        self.where.append((where, pid))

    def finished(self, value: Any = None, error: BaseException | None = None) -> None:
        self.calls += 1
        self.value, self.error = value, error
        self.ended.set()


class Talker(Runner):
    """Writes, reports progress, then returns a value or waits to be cancelled."""

    def __init__(self, block: bool = False) -> None:
        self.block = block

    def run(self, ctx: TaskContext) -> Any:
        ctx.output("stdout", "hello\n")
        ctx.progress(50, "half")
        if self.block:
            stopped = threading.Event()
            ctx.on_cancel(stopped.set)
            assert stopped.wait(30)
            ctx.check()
        return 42


@pytest.fixture(params=["thread", "sync"])
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    b = ThreadBackend() if request.param == "thread" else SyncBackend()
    yield b
    b.shutdown()


def test_a_job_reports_output_progress_and_its_value_once(backend: Any) -> None:
    ev = Collect()
    backend.submit(Job(Talker(), "t", 1, 1), ev)
    assert ev.ended.wait(10)
    assert ev.calls == 1 and ev.value == 42 and ev.error is None
    assert ev.outputs == [("stdout", "hello\n")]
    assert ev.progress_seen == [(50, "half")]


def test_cancel_runs_the_registered_abort() -> None:
    b = ThreadBackend()
    ev = Collect()
    h = b.submit(Job(Talker(block=True), "t", 1, 1), ev)
    wait_until(lambda: ev.progress_seen, 10, "the job started")
    b.cancel(h)
    assert ev.ended.wait(10)
    assert type(ev.error).__name__ == "TaskCancelled"
    b.shutdown()


def test_an_abort_registered_after_the_cancel_runs_at_once() -> None:
    ctx = TaskContext("t", 1, Collect())
    ctx.cancel()
    ran = []
    ctx.on_cancel(lambda: ran.append(1))
    assert ran == [1]


def test_threads_are_reused() -> None:
    ex = Executor(max_workers=2)
    try:
        for _ in range(50):
            ex.submit(TaskSpec(CallRunner(int))).wait(10)
        tasks = [ex.submit(TaskSpec(CallRunner(time.sleep, (0.01,)))) for _ in range(20)]
        ex.wait(tasks, timeout=30)
        assert ex.backend("thread").threads <= 3  # 2 slots (a thread may still be on its way back)
        assert all(t.ok for t in tasks)
    finally:
        ex.shutdown()


def _busy() -> None:
    x = 0
    while True:
        x += 1


@pytest.mark.parametrize("before", ["cprofile", "setprofile", "settrace", "nothing"])
def test_a_reused_thread_still_stops_a_busy_loop(before: str) -> None:
    """After a profiler or tracer ran in the main thread, a cancel still interrupts pure Python in a pooled thread."""
    ex = Executor(max_workers=1)
    try:
        ex.submit(TaskSpec(CallRunner(int))).wait(10)  # the pool's thread exists and is idle
        if before == "cprofile":
            p = cProfile.Profile()
            p.enable()
            sum(range(1000))
            p.disable()
        elif before == "setprofile":
            sys.setprofile(lambda *a: None)
            sum(range(10))
            sys.setprofile(None)
        elif before == "settrace":
            sys.settrace(lambda *a: None)
            sum(range(10))
            sys.settrace(None)
        rec = Recorder(ex)
        t = ex.submit(TaskSpec(CallRunner(_busy)))
        rec.wait_for(EventKind.STARTED, t)
        assert t.cancel()
        wait_until(lambda: ex.statistics().lingering == 0, 5, "the busy loop stopped")
        after = ex.submit(TaskSpec(CallRunner(int))).wait(10)  # the same pool goes on serving
        assert after.ok
        assert ex.backend("thread").threads == 1
    finally:
        ex.shutdown()


def test_cancel_between_claim_and_start_runs_nothing(tmp_path: Path) -> None:
    """A cancel landing right after the task turned RUNNING (before the backend has it) starts no command."""
    ex = Executor(max_workers=1)
    canary = tmp_path / "ran"
    try:
        rec = Recorder(ex)
        holder: dict[str, Any] = {}

        def cancel_on_start(ev: Any) -> None:
            if ev.kind is EventKind.STARTED and ev.task is holder.get("t"):
                ev.task.cancel()

        ex.bus.subscribe(cancel_on_start, [EventKind.STARTED])
        t = ex.submit(TaskSpec(BashRunner(f"touch {canary}; sleep 30")), hold=True)
        holder["t"] = t
        ex.release(t)
        t.wait(10)
        assert t.state is TaskState.CANCELLED
        assert rec.kinds(t)[-2:] == ["started", "cancelled"]
        other = ex.submit(TaskSpec(CallRunner(int))).wait(10)  # the slot came back
        assert other.ok
        ex.backend("thread").shutdown()
        assert not canary.exists()
    finally:
        ex.shutdown()


def test_no_started_after_the_end_under_races() -> None:
    """Start and cancel race on every task: each gets one terminal event, and STARTED never follows it."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    ex = Executor(max_workers=4)
    try:
        rec = Recorder(ex)
        tasks = [ex.submit(TaskSpec(CallRunner(time.sleep, (0.0005,)))) for _ in range(300)]
        for t in tasks[::2]:
            t.cancel()
        ex.wait(tasks, timeout=60)
        by_task: dict[int, list[str]] = {}
        for e in list(rec.events):
            by_task.setdefault(e.task.id, []).append(e.kind.value)
        for t in tasks:
            kinds = by_task[t.id]
            terminal = [k for k in kinds if k in ("succeeded", "failed", "cancelled", "blocked")]
            assert len(terminal) == 1, (t.label, kinds)
            assert kinds[-1] == terminal[0], (t.label, kinds)
    finally:
        sys.setswitchinterval(old)
        ex.shutdown()


def test_records_are_frozen_snapshots_without_secrets() -> None:
    ex = Executor(max_workers=1)
    try:
        rec = Recorder(ex)
        t = ex.submit(TaskSpec(BashRunner("echo $TOKEN", env={"TOKEN": "s3cr3t-value"}), name="tok"))
        t.wait(10)
        records = [e.record for e in rec.events if e.task is t]
        assert all(r is not None for r in records)
        assert [r.state.value for r in records if r.state is not TaskState.RUNNING][-1] == "succeeded"
        assert records[-1].label == "tok" and records[-1].backend == "thread"
        assert records[-1].where and records[-1].where.startswith("pid ")
        assert all("s3cr3t" not in repr(r) for r in records)
        with pytest.raises(AttributeError):
            records[-1].state = TaskState.FAILED  # type: ignore[misc]
    finally:
        ex.shutdown()


def test_process_backend_runs_a_portable_body_elsewhere() -> None:
    ex = Executor(max_workers=2)
    pool = WorkerPool(2, reaper=ex.reaper, timers=ex.timers)
    ex.add_backend(ProcessBackend(pool))
    try:
        body = compile_body("import os\nfrom ttasks_ipy import progress\nprogress(10, 'x')\npid = os.getpid() + k",
                            "<bg-backend>")
        rec = Recorder(ex)
        t = ex.submit(TaskSpec(PortablePython(body, {"k": 0}), backend="process")).wait(30)
        assert t.ok, t.error
        assert t.result["pid"] != __import__("os").getpid()
        assert t.record().where == f"worker process {t.result['pid']}"
        assert any(e.kind is EventKind.PROGRESS for e in rec.events if e.task is t)
        assert current_task() is None
    finally:
        ex.shutdown()
