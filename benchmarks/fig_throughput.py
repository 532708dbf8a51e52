"""Figure 2: throughput of many small tasks, through the core, against the usual alternatives."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from .harness import Result, Stats, fresh, log, settled, skipped

WORKERS = 4


def noop() -> None:
    return None


def sleep_1ms() -> None:
    time.sleep(0.001)


def _ours_call(n: int) -> float:
    from ttasks_ipy.core import CallRunner, Executor, TaskSpec

    ex = settled(Executor(max_workers=WORKERS))
    try:
        t0 = time.perf_counter()
        tasks = [ex.submit(TaskSpec(CallRunner(noop))) for _ in range(n)]
        ex.wait(tasks, timeout=600)
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def _ours_python(n: int) -> float:
    from ttasks_ipy.core import Executor, PythonRunner, TaskSpec, compile_body

    body = compile_body("None", "<bench>")
    ns: dict = {}
    ex = settled(Executor(max_workers=WORKERS))
    try:
        t0 = time.perf_counter()
        tasks = [ex.submit(TaskSpec(PythonRunner(body, {}, ns))) for _ in range(n)]
        ex.wait(tasks, timeout=600)
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def _ours_sync(n: int) -> float:
    from ttasks_ipy.core import CallRunner, Executor, SyncBackend, TaskSpec

    ex = settled(Executor(max_workers=WORKERS, backend=SyncBackend()))
    try:
        t0 = time.perf_counter()
        tasks = [ex.submit(TaskSpec(CallRunner(noop))) for _ in range(n)]
        ex.wait(tasks, timeout=600)
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def _thread_each(n: int) -> float:
    fresh()
    t0 = time.perf_counter()
    for _ in range(n):
        t = threading.Thread(target=noop)
        t.start()
        t.join()
    return time.perf_counter() - t0


def _tpe_each(n: int) -> float:
    fresh()
    with ThreadPoolExecutor(1) as pool:
        t0 = time.perf_counter()
        for _ in range(n):
            pool.submit(noop).result()
        return time.perf_counter() - t0


def _tpe(n: int, fn=noop) -> float:
    fresh()
    with ThreadPoolExecutor(WORKERS) as pool:
        t0 = time.perf_counter()
        fs = [pool.submit(fn) for _ in range(n)]
        futures_wait(fs)
        return time.perf_counter() - t0


def _bjm(n: int) -> float:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.lib.backgroundjobs import BackgroundJobManager

    InteractiveShell.instance()  # BackgroundJobManager formats tracebacks through the running shell
    fresh()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per job
        jobs = BackgroundJobManager()
        t0 = time.perf_counter()
        for _ in range(n):
            jobs.new(noop)
        for j in list(jobs.all.values()):
            j.join()
        return time.perf_counter() - t0


def _wait_cost(n: int, mode: str) -> float:
    """``n`` tasks of 1 ms, waited for with ``Executor.wait`` or with done-callbacks (same executor)."""
    from ttasks_ipy.core import CallRunner, Executor, TaskSpec

    ex = settled(Executor(max_workers=WORKERS))
    try:
        t0 = time.perf_counter()
        tasks = [ex.submit(TaskSpec(CallRunner(sleep_1ms))) for _ in range(n)]
        if mode == "wait":
            ex.wait(tasks, timeout=600)
        else:
            left = [n]
            done = threading.Event()
            lock = threading.Lock()

            def one(_t: object) -> None:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

            for t in tasks:
                t.add_done_callback(one)
            done.wait(600)
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def _ours_bash(n: int) -> float:
    from ttasks_ipy.core import BashRunner, Executor, TaskSpec

    ex = settled(Executor(max_workers=WORKERS))
    try:
        t0 = time.perf_counter()
        tasks = [ex.submit(TaskSpec(BashRunner("true"))) for _ in range(n)]
        ex.wait(tasks, timeout=600)
        el = time.perf_counter() - t0
        bad = [t for t in tasks if not t.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} bash tasks did not succeed: {bad[0].error}")
        return el
    finally:
        ex.shutdown()


def _raw_bash(n: int) -> float:
    def one(_: int) -> None:
        subprocess.run(["bash", "-c", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                       start_new_session=True, check=True)

    fresh()
    with ThreadPoolExecutor(WORKERS) as pool:
        t0 = time.perf_counter()
        list(pool.map(one, range(n)))
        return time.perf_counter() - t0


def _proc_scan() -> tuple[list[float], list[float], int]:
    """One ``session_members`` scan of /proc (done twice per bash task) vs one ``killpg(sid, 0)``."""
    from ttasks_ipy.core.procs import session_members

    sid = os.getsid(0)
    scan, probe = [], []
    for _ in range(50):
        t0 = time.perf_counter()
        session_members(sid)
        scan.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        try:
            os.killpg(os.getpgid(0), 0)
        except OSError:
            pass
        probe.append(time.perf_counter() - t0)
    nprocs = sum(1 for e in os.listdir("/proc") if e.isdigit())
    return scan, probe, nprocs


def run(quick: bool) -> list[Result]:
    n = 2000 if quick else 10_000
    reps = 1 if quick else 3
    out: list[Result] = []
    per = 1e6 / n  # seconds for n tasks -> µs per task

    log(f"  2: {n} no-op tasks x {reps}: ttasks, ThreadPoolExecutor, BackgroundJobManager")
    ours, tpe, bjm, py = [], [], [], []
    for _ in range(reps):
        ours.append(_ours_call(n))
        tpe.append(_tpe(n))
        bjm.append(_bjm(n))
        py.append(_ours_python(n))
    ours_s = Stats.of(ours).scaled(per)
    label = f"throughput: {n:,} no-op CallRunner tasks, max_workers={WORKERS}, Executor.wait"
    out.append(Result("2a", label, "core", "µs/task", ours_s, f"ThreadPoolExecutor({WORKERS}) + futures.wait",
                      Stats.of(tpe).scaled(per)))
    out.append(Result("2b", label, "core", "µs/task", ours_s, "IPython BackgroundJobManager (thread per job)",
                      Stats.of(bjm).scaled(per)))
    out.append(Result("2d", f"throughput: {n:,} no-op PythonRunner tasks (body `None`)", "core", "µs/task",
                      Stats.of(py).scaled(per), f"ThreadPoolExecutor({WORKERS}) + futures.wait",
                      Stats.of(tpe).scaled(per)))

    log(f"  2: {n} no-op tasks: dask.distributed Client(processes=False)")
    try:
        out.insert(2, _dask_row(n, 1 if quick else 2, ours_s, label, per))
    except Exception as e:
        out.insert(2, skipped("2c", label + " vs dask", "core", f"dask: {type(e).__name__}: {e}"))

    nw = 500 if quick else 4000
    log(f"  2: wait cost: {nw} tasks of 1 ms, Executor.wait vs done-callbacks")
    w, cb = [], []
    for _ in range(reps):
        w.append(_wait_cost(nw, "wait"))
        cb.append(_wait_cost(nw, "callbacks"))
    out.append(Result("2e", f"waiting: {nw:,} tasks of 1 ms waited with Executor.wait(all)", "core", "s",
                      Stats.of(w), "the same tasks counted down by done-callbacks", Stats.of(cb),
                      note="Executor.wait counts down with done-callbacks"))

    log("  2: where a task's time goes: the engine inline (SyncBackend), a new thread per attempt")
    sync, thr, reuse = [], [], []
    for _ in range(reps):
        sync.append(_ours_sync(n))
        thr.append(_thread_each(n // 2))
        reuse.append(_tpe_each(n // 2))
    out.append(Result("2h", f"the same {n:,} tasks run inline (SyncBackend): engine bookkeeping only", "core",
                      "µs/task", Stats.of(sync).scaled(per), "", None,
                      note="2a minus this is what running each attempt on a thread of its own costs"))
    out.append(Result("2i", "a new thread per call: Thread(target=f).start(); join()", "core", "µs/call",
                      Stats.of(thr).scaled(2e6 / n), "ThreadPoolExecutor(1).submit(f).result() (thread reused)",
                      Stats.of(reuse).scaled(2e6 / n), note="what ThreadBackend no longer does (it reuses threads)"))

    nb = 100 if quick else 500
    log(f"  2: {nb} `true` bash tasks x {reps}")
    ob, rb = [], []
    for _ in range(reps):
        ob.append(_ours_bash(nb))
        rb.append(_raw_bash(nb))
    perb = 1e3 / nb
    out.append(Result("2f", f"throughput: {nb} bash tasks `true`, max_workers={WORKERS}", "core", "ms/task",
                      Stats.of(ob).scaled(perb), f"subprocess.run(bash -c true) in ThreadPoolExecutor({WORKERS})",
                      Stats.of(rb).scaled(perb)))
    scan, probe, nprocs = _proc_scan()
    out.append(Result("2g", f"one /proc scan for a session's members ({nprocs} processes on the machine)", "core",
                      "µs", Stats.of(scan).scaled(1e6), "os.killpg(pgid, 0)", Stats.of(probe).scaled(1e6),
                      note="procs.session_members runs at least twice per bash task (terminate_tree at the end, "
                           "the deadline check after `grace`), and grows with every process on the machine"))
    return out


def _dask_row(n: int, reps: int, ours_s: Stats, label: str, per: float) -> Result:
    import logging

    from dask.distributed import Client
    from dask.distributed import wait as dask_wait

    logging.getLogger("distributed").setLevel(logging.ERROR)
    times = []
    t0 = time.perf_counter()
    with Client(processes=False, n_workers=1, threads_per_worker=WORKERS, dashboard_address=None) as client:
        startup = time.perf_counter() - t0
        for _ in range(reps):
            t0 = time.perf_counter()
            fs = [client.submit(noop, pure=False) for _ in range(n)]
            dask_wait(fs)
            times.append(time.perf_counter() - t0)
            del fs
    return Result("2c", label, "core", "µs/task", ours_s,
                  f"dask.distributed Client(processes=False, threads_per_worker={WORKERS}), submit each",
                  Stats.of(times).scaled(per), note=f"dask client start-up {startup:.2f}s, not counted")
