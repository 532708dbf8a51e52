"""Races: finish vs cancel vs timeout vs start, with the interpreter switching threads every 10 µs.

Each scenario runs many short tasks through a cap of 4 and asserts: one
terminal event per task and nothing after it, the task's state is the one
its terminal event says, never more than 4 running as seen from the events,
every slot back (``statistics()``), no stopped Python code left running, and
no process of a bash task left alive (its session empty) within a bounded
wait.

The reduced form runs by default; ``TTASKS_RELIABILITY=full`` runs ten times
as many tasks per scenario.
"""
from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from events_log import EventLog

from ttasks_ipy.core import BashRunner, CallRunner, EventKind, Executor, Task, TaskSpec, TaskState
from ttasks_ipy.core.procs import session_members

FULL = os.environ.get("TTASKS_RELIABILITY") == "full"
N = 600 if FULL else 60
CAP = 4
SEED = int(os.environ.get("TTASKS_SEED") or 0)

pytestmark = pytest.mark.timeout(600 if FULL else 60)


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    """Threads switch every 10 µs (instead of 5 ms) while the test runs."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def naps(seconds: float) -> str:
    """Sleep in short naps (a cancel lands between two of them)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.005)
    return "done"


def spin(seconds: float) -> str:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return "done"


def make_spec(rng: random.Random, *, timeout_like_duration: bool = False, retries: int = 0) -> TaskSpec:
    """A short task (Python sleep or spin, or a bash sleep); its timeout equal to its duration if asked."""
    d = rng.choice([0.001, 0.002, 0.005, 0.01])
    timeout = d if timeout_like_duration else None
    r = rng.random()
    if r < 0.25:
        runner = BashRunner(f"sleep {d}")
    else:
        runner = CallRunner(nap if r < 0.65 else spin, (d,))
    return TaskSpec(runner, timeout=timeout, retries=retries, backoff=0)


def run_scenario(tmp_path, label: str, specs: list[TaskSpec],
                 prepare: Callable[[Executor], Callable[[Task], None]] | None = None) -> dict[str, int]:
    """Submit ``specs``, wait, and check every invariant; returns the counts of end states."""
    ex = Executor(max_workers=CAP, output_dir=tmp_path, grace=0.2)
    log = EventLog(ex)
    after_submit = prepare(ex) if prepare is not None else None
    t0 = time.monotonic()
    try:
        tasks = []
        for spec in specs:
            t = ex.submit(spec)
            tasks.append(t)
            if after_submit is not None:
                after_submit(t)
        done = ex.wait(tasks, timeout=300 if FULL else 40)
        assert len(done) == len(tasks)
        stats = ex.statistics()
        states = {s.value: n for s in TaskState if (n := sum(t.state is s for t in tasks))}
        # stopped Python code ends soon (sleep and spin both check for the cancel)
        deadline = time.monotonic() + 10
        while ex.statistics().lingering and time.monotonic() < deadline:
            time.sleep(0.01)
        lingering = ex.statistics().lingering
        # every process of a bash task ends within the grace period and a margin
        bash = [t for t in tasks if t.kind == "bash" and t.pid]
        deadline = time.monotonic() + 5
        alive = bash
        while alive and time.monotonic() < deadline:
            alive = [t for t in alive if session_members(t.pid)]
            if alive:
                time.sleep(0.02)
        problems = log.problems(tasks)
        counts = (f"{label}: {len(tasks)} tasks in {time.monotonic() - t0:.2f}s: {states}; "
                  f"peak running {log.peak}/{CAP}; STARTED {log.count(EventKind.STARTED)}, "
                  f"RETRYING {log.count(EventKind.RETRYING)}; bash with a pid {len(bash)}; stats {stats}")
        print(f"\n[races] {counts}")
        assert not problems, f"{problems[:10]} ({len(problems)} problems; {counts})"
        assert stats.running == 0 and stats.queued == 0, counts
        assert lingering == 0, f"{lingering} stopped Python attempts still running ({counts})"
        assert not alive, f"processes left: {[(t.label, session_members(t.pid)) for t in alive]} ({counts})"
        log.check_cap(counts)
        return states
    finally:
        log.unsubscribe()
        ex.shutdown()


def test_timeout_equal_to_duration(tmp_path):
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    states = run_scenario(tmp_path, f"timeout = duration (seed {seed})",
                          [make_spec(rng, timeout_like_duration=True) for _ in range(N)])
    assert set(states) <= {"succeeded", "failed"}, states


def test_retries_with_timeouts(tmp_path):
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    states = run_scenario(tmp_path, f"retries with timeout = duration (seed {seed})",
                          [make_spec(rng, timeout_like_duration=True, retries=rng.choice([1, 2]))
                           for _ in range(N)])
    assert set(states) <= {"succeeded", "failed"}, states


def test_cancel_inside_started_subscriber(tmp_path):
    """The cancel runs on the publishing thread while STARTED is being published."""
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    chosen: set[int] = set()

    def prepare(ex: Executor) -> Callable[[Task], None]:
        ex.bus.subscribe(lambda ev: ev.task.cancel() if ev.task.id in chosen else None, [EventKind.STARTED])
        return lambda t: None

    chosen.update(i + 1 for i in range(N) if rng.random() < 0.5)
    states = run_scenario(tmp_path, f"cancel in a STARTED subscriber (seed {seed})",
                          [make_spec(rng, timeout_like_duration=rng.random() < 0.5) for _ in range(N)], prepare)
    assert states.get("cancelled", 0) >= len(chosen) // 2, states


def test_cancel_from_thread_on_started(tmp_path):
    """A STARTED subscriber hands the task to another thread, which cancels it at once."""
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    q: queue.Queue[Task | None] = queue.Queue()
    stop: list[Callable[[], None]] = []

    def prepare(ex: Executor) -> Callable[[Task], None]:
        ex.bus.subscribe(lambda ev: q.put(ev.task) if ev.task.id % 2 else None, [EventKind.STARTED])

        def loop() -> None:
            while (t := q.get()) is not None:
                t.cancel()

        th = threading.Thread(target=loop, daemon=True)
        th.start()
        stop.append(lambda: (q.put(None), th.join(5)))
        return lambda t: None

    try:
        run_scenario(tmp_path, f"cancel from a thread on STARTED (seed {seed})",
                     [make_spec(rng, timeout_like_duration=rng.random() < 0.3) for _ in range(N)], prepare)
    finally:
        for f in stop:
            f()


def test_cancel_looping_thread(tmp_path):
    """A plain thread calls ``cancel`` in a loop from a random moment around the task's start."""
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    q: queue.Queue[tuple[Task, float] | None] = queue.Queue()
    threads: list[threading.Thread] = []

    def loop() -> None:
        while (item := q.get()) is not None:
            t, delay = item
            end = time.monotonic() + delay
            while time.monotonic() < end and not t.state.terminal:
                pass
            while not t.state.terminal:
                t.cancel()

    def prepare(ex: Executor) -> Callable[[Task], None]:
        for _ in range(2):
            th = threading.Thread(target=loop, daemon=True)
            th.start()
            threads.append(th)
        return lambda t: q.put((t, rng.choice([0, 0.0005, 0.001, 0.003]))) if rng.random() < 0.5 else None

    try:
        run_scenario(tmp_path, f"cancel in a loop (seed {seed})",
                     [make_spec(rng, timeout_like_duration=rng.random() < 0.3, retries=rng.choice([0, 1]))
                      for _ in range(N)], prepare)
    finally:
        for _ in threads:
            q.put(None)
        for th in threads:
            th.join(5)


def test_cancel_around_start_of_long_tasks(tmp_path):
    """Long commands and Python sleeps cancelled around their start: all of them stop within the grace period."""
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    q: queue.Queue[tuple[Task, float] | None] = queue.Queue()
    threads: list[threading.Thread] = []

    def loop() -> None:
        while (item := q.get()) is not None:
            t, delay = item
            end = time.monotonic() + delay
            while time.monotonic() < end and t.state is TaskState.QUEUED:
                pass
            while not t.state.terminal:
                t.cancel()

    def prepare(ex: Executor) -> Callable[[Task], None]:
        for _ in range(2):
            th = threading.Thread(target=loop, daemon=True)
            th.start()
            threads.append(th)
        return lambda t: q.put((t, rng.choice([0, 0.0002, 0.0005, 0.001])))

    specs = [TaskSpec(BashRunner("sleep 30") if rng.random() < 0.5 else CallRunner(naps, (30,)))
             for _ in range(N // 2)]
    t0 = time.monotonic()
    try:
        states = run_scenario(tmp_path, f"cancel around the start of long tasks (seed {seed})", specs, prepare)
    finally:
        for _ in threads:
            q.put(None)
        for th in threads:
            th.join(5)
    assert states == {"cancelled": len(specs)}, states
    assert time.monotonic() - t0 < 25, "a cancelled task kept its slot until its work ended by itself"
