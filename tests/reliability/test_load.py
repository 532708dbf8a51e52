"""Load: many short tasks through a small worker cap, with failures and cancels from another thread.

Through the core ``Executor``: every task ends exactly once (one terminal
state, one terminal event, nothing after it), the cap holds as seen from the
events, every value is right and the slots all come back. Through a real
kernel: ``%bg -o rN`` cells with random outcomes, one ``%bg --wait all``, and
every success delivered exactly once, every failure delivered nothing (a
command delivers its ``CommandResult`` whatever its exit status).

The reduced form runs by default; ``TTASKS_RELIABILITY=full`` runs 1,000 core
tasks and 300 kernel tasks.
"""
from __future__ import annotations

import json
import os
import queue
import random
import threading
import time

import pytest
from conftest import start_kernel, stop_kernel
from events_log import EventLog

from ttasks_ipy.core import BashRunner, CallRunner, CommandResult, EventKind, Executor, TaskSpec, TaskState

FULL = os.environ.get("TTASKS_RELIABILITY") == "full"
CORE_TASKS = 1000 if FULL else 200
KERNEL_TASKS = 300 if FULL else 60
CAP = 4
#: TTASKS_SEED=N replays a run (each run prints its seed)
SEED = int(os.environ.get("TTASKS_SEED") or 0)

pytestmark = pytest.mark.timeout(600 if FULL else 60)


class Boom(Exception):
    """The failure a task raises on purpose."""


def work(i: int, seconds: float, busy: bool, fail: bool) -> int:
    """Sleep or spin for ``seconds``, then raise or return ``i * 7``."""
    if busy:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    else:
        time.sleep(seconds)
    if fail:
        raise Boom(f"task {i} fails")
    return i * 7


def test_core_load(tmp_path):
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    ex = Executor(max_workers=CAP, output_dir=tmp_path, grace=0.2)
    log = EventLog(ex)
    # cancels while running come from a STARTED subscriber, handed to another thread
    to_cancel_running: set[int] = set()
    started_q: queue.Queue[object] = queue.Queue()
    ex.bus.subscribe(lambda ev: started_q.put(ev.task) if ev.task.id in to_cancel_running else None,
                     [EventKind.STARTED])
    queued_q: queue.Queue[object] = queue.Queue()
    cancelled_while: dict[str, int] = {"queued": 0, "running": 0, "late": 0}

    def canceller(q: queue.Queue[object], what: str) -> None:
        while True:
            t = q.get()
            if t is None:
                return
            if t.cancel():
                cancelled_while[what] += 1
            else:
                cancelled_while["late"] += 1

    threads = [threading.Thread(target=canceller, args=(q, w), daemon=True)
               for q, w in ((queued_q, "queued"), (started_q, "running"))]
    for th in threads:
        th.start()
    plan = []
    t0 = time.monotonic()
    try:
        tasks = []
        for i in range(CORE_TASKS):
            r = rng.random()
            if r < 0.03:
                spec, want = TaskSpec(BashRunner("true")), ("ok-bash", None)
            elif r < 0.06:
                spec, want = TaskSpec(BashRunner("exit 3")), ("fail-bash", None)
            else:
                fail = rng.random() < 0.2
                args = (i, rng.uniform(0, 0.005), rng.random() < 0.5, fail)
                spec, want = TaskSpec(CallRunner(work, args)), ("fail" if fail else "ok", i * 7)
            c = rng.random()
            cancel = "queued" if c < 0.08 else "running" if c < 0.16 else None
            # the id is known only after submit: a STARTED subscriber may see the task before we add it
            # to the set, so running cancels are chosen by id ahead of time (ids count from 1)
            if cancel == "running":
                to_cancel_running.add(i + 1)
            t = ex.submit(spec)
            assert t.id == i + 1
            if cancel == "queued":
                queued_q.put(t)
            tasks.append(t)
            plan.append((want, cancel))
        done = ex.wait(tasks, timeout=120 if FULL else 40)
        duration = time.monotonic() - t0
        assert len(done) == len(tasks)
        stats = ex.statistics()
        problems = log.problems(tasks)
        states = {s.value: sum(t.state is s for t in tasks) for s in TaskState}
        wrong = []
        for t, ((kind, value), cancel) in zip(tasks, plan, strict=True):
            if t.state is TaskState.SUCCEEDED:
                if kind == "ok":
                    if t.result != value:
                        wrong.append(f"{t.label}: {t.result!r} != {value!r}")
                elif kind == "ok-bash":
                    if not (isinstance(t.result, CommandResult) and t.result.returncode == 0):
                        wrong.append(f"{t.label}: {t.result!r}")
                else:
                    wrong.append(f"{t.label} succeeded but was meant to fail ({kind})")
            elif t.state is TaskState.FAILED:
                if kind == "fail-bash" and t.reason != "exit status 3":
                    wrong.append(f"{t.label}: reason {t.reason!r}")
                elif kind == "fail" and not isinstance(t.exception, Boom):
                    wrong.append(f"{t.label}: exception {t.exception!r}")
                elif kind.startswith("ok"):
                    wrong.append(f"{t.label} failed but was meant to succeed: {t.reason}")
            elif t.state is TaskState.CANCELLED:
                if cancel is None:
                    wrong.append(f"{t.label} cancelled but nobody cancelled it")
            else:
                wrong.append(f"{t.label} ended {t.state.value}")
        counts = (f"{len(tasks)} tasks in {duration:.2f}s (seed {seed}): {states}; cancels {cancelled_while}; "
                  f"peak running {log.peak}/{CAP}; STARTED events {log.count(EventKind.STARTED)}; "
                  f"stats {stats}")
        print("\n[load core]", counts)
        assert not problems, f"{problems[:10]} ({len(problems)} problems; {counts})"
        assert not wrong, f"{wrong[:10]} ({len(wrong)} wrong; {counts})"
        assert stats.running == 0 and stats.queued == 0, counts
        assert cancelled_while["queued"] > 0 and states["succeeded"] > 0 and states["failed"] > 0, counts
        log.check_cap(counts)
    finally:
        queued_q.put(None)
        started_q.put(None)
        for th in threads:
            th.join(5)
        ex.shutdown()


def kernel_line(i: int, outcome: str) -> str:
    """One ``%bg -o rI`` line whose task ends in ``outcome``."""
    return {
        "ok": f"%bg --quiet -o r{i} {i} * 7",
        "ok-sleep": f"%bg --quiet -o r{i} __import__('time').sleep(0.003) or {i} * 7",
        "fail": f"%bg --quiet -o r{i} 1 / 0",
        "ok-bash": f"%bg --quiet -o r{i} !echo {i}",
        "fail-bash": f"%bg --quiet -o r{i} !exit 3",
    }[outcome]


def test_kernel_load():
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    outcomes = rng.choices(["ok", "ok-sleep", "fail", "ok-bash", "fail-bash"], [4, 3, 2, 1, 1], k=KERNEL_TASKS)
    k = start_kernel()
    try:
        t0 = time.monotonic()
        for i, outcome in enumerate(outcomes):
            r = k.run(kernel_line(i, outcome))
            assert "Traceback" not in r.all_text, r.all_text
        k.run("%bg --wait all --timeout 60", timeout=90)
        duration = time.monotonic() - t0
        # what is in the namespace now, then overwritten: a second delivery would bring it back
        k.run("_missing = object()\n"
              f"_got = {{i: globals().get(f'r{{i}}', _missing) for i in range({KERNEL_TASKS})}}\n"
              "_got = {i: ['missing', ''] if v is _missing else [type(v).__name__, str(v)] for i, v in _got.items()}\n"
              f"for _i in range({KERNEL_TASKS}): globals()[f'r{{_i}}'] = '<overwritten>'")
        out = k.run("import json as _json; print(_json.dumps(_got))").stdout
        got = {int(key): v for key, v in json.loads(out).items()}
        k.run("%bg --wait all --timeout 30", timeout=60)
        k.run("import time as _t; _t.sleep(0.2)")  # an idle moment in between, when delivery may run
        again = int(k.value(f"sum(globals()[f'r{{i}}'] != '<overwritten>' for i in range({KERNEL_TASKS}))"))
        wrong = []
        for i, outcome in enumerate(outcomes):
            want = {"ok": ["int", str(i * 7)], "ok-sleep": ["int", str(i * 7)],
                    "ok-bash": ["CommandResult", f"{i}\n"],
                    # a command delivers its CommandResult whatever its exit status (README)
                    "fail-bash": ["CommandResult", ""]}.get(outcome, ["missing", ""])
            if got[i] != want:
                wrong.append(f"r{i} ({outcome}): {got[i]} != {want}")
        n_ok = sum(o != "fail" for o in outcomes)
        counts = (f"{KERNEL_TASKS} kernel tasks in {duration:.2f}s (seed {seed}): {n_ok} should deliver, "
                  f"{KERNEL_TASKS - n_ok} should not; wrong {len(wrong)}; delivered again {again}")
        print("\n[load kernel]", counts)
        assert not wrong, f"{wrong[:10]} ({counts})"
        assert again == 0, counts
    finally:
        stop_kernel(k)
