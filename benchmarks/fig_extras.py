"""Figure 8: worker processes (``--process``), prompt streaming against the local fake server, the ledger
(its cost per task and per dispatch, and ``--history`` over 100,000 records)."""
from __future__ import annotations

import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .harness import Result, Stats, children_quiet, log, skipped

WORKERS = 4


def noop() -> None:
    return None


def _cold_start() -> tuple[float, float]:
    """(first --process task on a fresh pool of 1, seconds; the worker's own start-up figure)."""
    from ttasks_ipy.core import Executor, TaskSpec, compile_body
    from ttasks_ipy.core.backends.process.backend import ProcessBackend
    from ttasks_ipy.core.backends.process.pool import WorkerPool
    from ttasks_ipy.core.runners.portable import PortablePython

    ex = Executor(max_workers=1)
    pool = WorkerPool(1, reaper=ex.reaper, timers=ex.timers)
    ex.add_backend(ProcessBackend(pool))
    try:
        body = compile_body("None", "<bench>")
        t0 = time.perf_counter()
        t = ex.submit(TaskSpec(PortablePython(body, {}), backend="process"))
        t.wait(60)
        el = time.perf_counter() - t0
        if not t.ok:
            raise RuntimeError(f"--process task failed: {t.error}")
        return el, pool.statistics().__dict__.get("last_startup") or el
    finally:
        pool.shutdown()
        ex.shutdown()


def _spawn_cold() -> float:
    ctx = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(1, mp_context=ctx) as p:
        p.submit(noop).result(60)
        return time.perf_counter() - t0


def _warm_tasks(n: int) -> float:
    """Seconds for ``n`` no-op --process tasks on a warm pool of WORKERS."""
    from ttasks_ipy.core import Executor, TaskSpec, compile_body
    from ttasks_ipy.core.backends.process.backend import ProcessBackend
    from ttasks_ipy.core.backends.process.pool import WorkerPool
    from ttasks_ipy.core.runners.portable import PortablePython

    ex = Executor(max_workers=WORKERS)
    pool = WorkerPool(WORKERS, reaper=ex.reaper, timers=ex.timers)
    ex.add_backend(ProcessBackend(pool))
    body = compile_body("None", "<bench>")
    try:
        warm = [ex.submit(TaskSpec(PortablePython(body, {}), backend="process")) for _ in range(WORKERS * 2)]
        ex.wait(warm, timeout=60)
        children_quiet()  # the workers and the executor's helpers have booted
        t0 = time.perf_counter()
        tasks = [ex.submit(TaskSpec(PortablePython(body, {}), backend="process")) for _ in range(n)]
        ex.wait(tasks, timeout=300)
        el = time.perf_counter() - t0
        bad = [t for t in tasks if not t.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} --process tasks failed: {bad[0].error}")
        return el
    finally:
        pool.shutdown()
        ex.shutdown()


def _ppe_warm(n: int, method: str) -> float:
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context(method)) as p:
        list(p.map(int, range(WORKERS * 2)))
        children_quiet()  # its workers have booted
        t0 = time.perf_counter()
        fs = [p.submit(noop) for _ in range(n)]
        for f in fs:
            f.result(60)
        return time.perf_counter() - t0


def _processes(quick: bool) -> list[Result]:
    reps = 2 if quick else 5
    log(f"  8: worker process start-up x {reps}")
    cold, spawn = [], []
    for _ in range(reps):
        cold.append(_cold_start()[0])
        spawn.append(_spawn_cold())
    n = 50 if quick else 300
    log(f"  8: {n} no-op --process tasks on a warm pool")
    ours, spawn_w = [], []
    for _ in range(1 if quick else 5):  # in turn, so that both meet the same machine (its speed drifts)
        ours.append(_warm_tasks(n))
        spawn_w.append(_ppe_warm(n, "spawn"))
    per = 1e3 / n
    return [
        Result("8a", "worker start-up: first `--process` task on a fresh pool", "core", "ms",
               Stats.of(cold).scaled(1e3), "ProcessPoolExecutor(1, spawn): first task", Stats.of(spawn).scaled(1e3),
               note="a worker is a fresh interpreter (Popen of worker_main), like the spawn start method"),
        Result("8b", f"per-task: {n} no-op `--process` tasks, warm pool of {WORKERS}", "core", "ms/task",
               Stats.of(ours).scaled(per), f"ProcessPoolExecutor({WORKERS}, spawn), warm",
               Stats.of(spawn_w).scaled(per),
               note="each job: the pickled runner, the environment only if it changed, its output pipes (kept from "
                    "the worker's last job when it left nothing running); "
                    "one kernel thread follows every job; 5 repeats in turn with the baseline"),
    ]


def _prompt(quick: bool) -> list[Result]:
    tests = Path(__file__).resolve().parent.parent / "tests"
    if not (tests / "llm_server.py").exists():
        return [skipped("8c", "prompt streaming", "core", "tests/llm_server.py is not there")]
    sys.path.insert(0, str(tests))
    try:
        from llm_server import FakeLLM
    finally:
        sys.path.remove(str(tests))
    import httpx

    from ttasks_ipy.core import Executor, TaskSpec
    from ttasks_ipy.core.runners.prompt import PromptRunner, PromptSettings, shutdown_loop

    words = 500 if quick else 3000
    reps = 2 if quick else 5
    text = " ".join(f"w{i}" for i in range(words))
    log(f"  8: a prompt answered in {words + 1} streamed chunks x {reps}")
    ours, raw = [], []
    with FakeLLM() as srv:
        settings = PromptSettings(base_url=srv.base_url, model="echo")
        ex = Executor(max_workers=2)
        client = httpx.Client()
        body = {"model": "echo", "stream": True, "messages": [{"role": "user", "content": text}]}
        try:
            for _ in range(reps + 1):
                t0 = time.perf_counter()
                t = ex.submit(TaskSpec(PromptRunner(text, settings)))
                t.wait(60)
                el = time.perf_counter() - t0
                if not t.ok or not str(t.result).endswith(f"w{words - 1}"):
                    raise RuntimeError(f"prompt task: {t.status} {t.error}")
                t0 = time.perf_counter()
                got = []
                with client.stream("POST", srv.base_url + "/chat/completions", json=body, timeout=60) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            got.append(json.loads(line[6:]))
                raw_el = time.perf_counter() - t0
                if len(got) < words:
                    raise RuntimeError(f"raw stream: {len(got)} chunks")
                ours.append(el)
                raw.append(raw_el)
        finally:
            client.close()
            ex.shutdown()
            shutdown_loop()
    ours, raw = ours[1:], raw[1:]  # the first of each warms up (connections, imports)
    per = 1e6 / (words + 1)
    return [Result("8c", f"prompt streaming: {words + 1} chunks from the local fake server, task end to end", "core",
                   "µs/chunk", Stats.of(ours).scaled(per),
                   "httpx.Client stream of the same request, each chunk json-decoded",
                   Stats.of(raw).scaled(per),
                   note="both reuse one connection pool; the task streams on the shared asyncio loop")]


def _tasks_with_ledger(n: int, folder: Path | None) -> tuple[float, float]:
    """(seconds for ``n`` no-op tasks submitted and waited for, seconds more for the ledger to hold them all)."""
    from ttasks_ipy.core import CallRunner, Executor, TaskSpec
    from ttasks_ipy.core.ledger import Extras, LedgerWriter

    ex = Executor(max_workers=WORKERS, keep_tasks=n + 10)
    writer = None
    if folder is not None:
        writer = LedgerWriter(folder / f"l{time.perf_counter_ns()}.sqlite", ex.bus, kid="bench", session="bench",
                              extras=lambda t: Extras(values={"x": t.value}))
    try:
        t0 = time.perf_counter()
        tasks = [ex.submit(TaskSpec(CallRunner(noop))) for _ in range(n)]
        ex.wait(tasks, timeout=300)
        el = time.perf_counter() - t0
        if not all(t.ok for t in tasks):
            raise RuntimeError("a no-op task failed")
        t1 = time.perf_counter()
        if writer is not None:
            if not writer.flush(120) or writer.ledger.count() != n:
                raise RuntimeError(f"the ledger holds {writer.ledger.count()} of {n} tasks")
        return el, time.perf_counter() - t1
    finally:
        if writer is not None:
            writer.close()
        ex.shutdown()


def _submit_latency(n: int, folder: Path | None) -> float:
    """Median seconds of one ``Executor.submit`` of a held task (what ``%bg`` pays in the engine)."""
    import statistics

    from ttasks_ipy.core import CallRunner, Executor, TaskSpec
    from ttasks_ipy.core.ledger import LedgerWriter

    ex = Executor(max_workers=WORKERS, keep_tasks=n + 10)
    writer = LedgerWriter(folder / f"s{time.perf_counter_ns()}.sqlite", ex.bus, kid="bench",
                          session="bench") if folder is not None else None
    try:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            t = ex.submit(TaskSpec(CallRunner(noop)))
            times.append(time.perf_counter() - t0)
            t.wait(10)
        return statistics.median(times)
    finally:
        if writer is not None:
            writer.close()
        ex.shutdown()


def _history_ledger(path: Path, n: int, indexed: bool) -> None:
    """A ledger of ``n`` finished tasks over 50 notebooks (``indexed=False``: without the ledger's indexes)."""
    from ttasks_ipy.core.ledger import Ledger
    from ttasks_ipy.core.ledger.store import COLUMNS

    ledger = Ledger(path)
    now = time.time() - n
    rows = []
    for i in range(n):
        row = dict.fromkeys(COLUMNS)
        row.update(kid=f"k{i // 500}", session=f"nb{i % 50}.ipynb", tid=i, name=f"t{i}", kind="python",
                   description=f"x{i} = f({i})", state="succeeded", status="succeeded", attempt=1, retries=0,
                   created=now + i, started=now + i, finished=now + i + 0.5, backend="thread",
                   result_names='["x"]', detached=0, updated=now + i)
        rows.append([row[c] for c in COLUMNS])
    ledger.write(rows)
    ledger.close()
    if not indexed:
        import sqlite3

        con = sqlite3.connect(path)
        found = con.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall()
        for (name,) in found:
            con.execute(f"DROP INDEX {name}")
        con.commit()
        con.close()


def _history_answer(path: Path) -> float:
    """Seconds for ``%bg --history``'s work: open, the query of one notebook's last 20, the table."""
    from ttasks_ipy.core.ledger import Ledger
    from ttasks_ipy.views.history import history_table

    t0 = time.perf_counter()
    ledger = Ledger(path)
    entries = ledger.history(20, session="nb7.ipynb")
    table = history_table(entries)
    total = ledger.count("nb7.ipynb")
    ledger.close()
    el = time.perf_counter() - t0
    if len(entries) != 20 or not table or not total:
        raise RuntimeError("the history query found too little")
    return el


def _ledger(quick: bool) -> list[Result]:
    import tempfile

    n = 2_000 if quick else 10_000
    reps = 2 if quick else 5
    hist_n = 20_000 if quick else 100_000
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log(f"  8: {n} no-op tasks, ledger on / off, x {reps}")
        on, off, catch = [], [], []
        for _ in range(reps):
            a, c = _tasks_with_ledger(n, folder)
            on.append(a)
            catch.append(c)
            off.append(_tasks_with_ledger(n, None)[0])
        per = 1e6 / n
        out.append(Result("8d", f"per-task: {n:,} no-op tasks, ledger on (every record written)", "core", "µs/task",
                          Stats.of(on).scaled(per), "the same tasks, ledger off", Stats.of(off).scaled(per),
                          note="target ≤ 1.10x; the writer batches on its own thread",
                          extra={"catch_up_s": Stats.of(catch).__dict__}))
        k = 300 if quick else 2000
        log(f"  8: Executor.submit latency, ledger on / off ({k} submits)")
        lat_on = [_submit_latency(k, folder) for _ in range(reps)]
        lat_off = [_submit_latency(k, None) for _ in range(reps)]
        out.append(Result("8e", "dispatch: one Executor.submit (median of each run), ledger on", "core", "µs",
                          Stats.of(lat_on).scaled(1e6), "the same, ledger off", Stats.of(lat_off).scaled(1e6),
                          note="the subscriber only appends the event to a deque"))
        log(f"  8: --history over {hist_n:,} records")
        fast, slow = folder / "h.sqlite", folder / "h-noindex.sqlite"
        _history_ledger(fast, hist_n, True)
        _history_ledger(slow, hist_n, False)
        ours = [_history_answer(fast) for _ in range(reps * 2)]
        base = [_history_answer(slow) for _ in range(reps * 2)]
        out.append(Result("8f", f"`%bg --history` over {hist_n:,} records: open, query, table", "core", "ms",
                          Stats.of(ours).scaled(1e3), "the same query without the ledger's indexes",
                          Stats.of(base).scaled(1e3), note="target < 100 ms"))
    return out


def run(quick: bool) -> list[Result]:
    out: list[Result] = []
    for part, ids in ((_processes, "8ab"), (_prompt, "8c"), (_ledger, "8def")):
        try:
            out.extend(part(quick))
        except Exception as e:
            out.append(skipped(ids, part.__name__.strip("_"), "core", f"{type(e).__name__}: {e}"))
    return out
