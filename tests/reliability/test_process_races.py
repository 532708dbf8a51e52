"""``--process`` jobs under cancels, timeouts and killed workers, with more tasks at once than workers.

One pump thread follows every job (``core/backends/process/pump.py``): here
it meets jobs that end as they are cancelled, time out as they finish, wait
for a worker while it is replaced, and workers killed from outside at random
moments. The checks: every task ends, once, in a state its events agree
with; a task that succeeded printed all its lines, in order, and nothing of
another task; a failure is a timeout or a worker's death (or the cancel);
the pool ends with no busy worker and no worker process alive after
shutdown; no event came for more tasks at once than the cap.

The reduced form runs by default; ``TTASKS_RELIABILITY=full`` runs ten times
as many tasks.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from events_log import EventLog

from ttasks_ipy.core import Executor, TaskSpec, TaskState, bind, compile_body
from ttasks_ipy.core.backends.process.backend import ProcessBackend
from ttasks_ipy.core.backends.process.pool import WorkerPool
from ttasks_ipy.core.errors import WorkerDied
from ttasks_ipy.core.procs import tree_alive
from ttasks_ipy.core.runners.portable import PortablePython

FULL = os.environ.get("TTASKS_RELIABILITY") == "full"
N = 1000 if FULL else 100
CAP = 4
WORKERS = 3  # fewer than the cap: one job at a time waits in the pump for a worker
SEED = int(os.environ.get("TTASKS_SEED") or 0)

pytestmark = pytest.mark.timeout(900 if FULL else 120)

BODY = """
import time
for i in range(lines):
    print(f"{tag} {i}", flush=i % 3 == 0)
time.sleep(nap)
n = lines
"""


def test_process_jobs_survive_cancels_timeouts_and_killed_workers():
    seed = SEED or random.randrange(1 << 30)
    rng = random.Random(seed)
    ex = Executor(max_workers=CAP, grace=0.2)
    pool = WorkerPool(WORKERS, grace=0.2, reaper=ex.reaper, timers=ex.timers)
    ex.add_backend(ProcessBackend(pool))
    log = EventLog(ex)
    body = compile_body(BODY.strip("\n"), "<process-races>")
    stop = threading.Event()
    kills = [0]

    def chaos() -> None:  # kills a random worker now and then, as an OOM killer or a user would
        while not stop.wait(rng.uniform(0.02, 0.12)):
            pids = pool.pids
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills[0] += 1
                except ProcessLookupError:
                    pass

    killer = threading.Thread(target=chaos, daemon=True)
    started = time.monotonic()
    try:
        killer.start()
        tasks, planned = [], {}
        for i in range(N):
            nap = rng.choice([0.0, 0.0, 0.001, 0.01, 0.03])
            lines = rng.choice([0, 1, 5, 50])
            timeout = nap if rng.random() < 0.1 and nap else None  # a timeout as long as the task
            runner = PortablePython(body, bind(body, {"lines": lines, "nap": nap, "tag": f"t{i}"}), names=["n"])
            t = ex.submit(TaskSpec(runner, backend="process", timeout=timeout))
            tasks.append(t)
            planned[t.id] = (f"t{i}", lines)
            if rng.random() < 0.1:
                t.cancel()  # at once: often while it waits for a worker, or just sent
            elif rng.random() < 0.05:
                threading.Timer(rng.uniform(0, 0.02), t.cancel).start()
        done = ex.wait(tasks, timeout=600 if FULL else 90)
        assert len(done) == len(tasks)
        stop.set()
        killer.join(5)
        states = {s.value: n for s in TaskState if (n := sum(t.state is s for t in tasks))}
        counts = (f"seed {seed}: {N} tasks in {time.monotonic() - started:.1f}s: {states}; {kills[0]} workers "
                  f"killed; peak running {log.peak}/{CAP}; pool {pool.statistics()}")
        print(f"\n[process races] {counts}")
        assert not log.problems(tasks), (log.problems(tasks)[:10], counts)
        log.check_cap(counts)
        for t in tasks:
            tag, lines = planned[t.id]
            if t.state is TaskState.SUCCEEDED:
                assert t.result == {"n": lines}, (t.label, t.result, counts)
                assert t.output == "".join(f"{tag} {i}\n" for i in range(lines)), (t.label, t.output[:200], counts)
            elif t.state is TaskState.FAILED:
                why = t.error or t.reason or ""
                assert isinstance(t.exception, WorkerDied) or "timed out" in why, (t.label, why, counts)
            else:
                assert t.state is TaskState.CANCELLED, (t.label, t.state, counts)
        assert states.get("succeeded", 0) > N // 3, counts  # the chaos must not be all there is
        stats = pool.statistics()
        assert stats.busy == 0, counts
        assert ex.statistics().running == 0, counts
    finally:
        stop.set()
        log.unsubscribe()
        pids = pool.pids
        pool.shutdown()
        ex.shutdown()
    deadline = time.monotonic() + 5
    while any(tree_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if tree_alive(p)], "worker processes left after shutdown"
