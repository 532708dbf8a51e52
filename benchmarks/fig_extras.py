"""Figure 8: worker processes (``--process``), prompt streaming against the local fake server, the ledger."""
from __future__ import annotations

import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .harness import Result, Stats, log, skipped

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
    ours = [_warm_tasks(n) for _ in range(1 if quick else 3)]
    spawn_w = [_ppe_warm(n, "spawn") for _ in range(1 if quick else 3)]
    per = 1e3 / n
    return [
        Result("8a", "worker start-up: first `--process` task on a fresh pool", "core", "ms",
               Stats.of(cold).scaled(1e3), "ProcessPoolExecutor(1, spawn): first task", Stats.of(spawn).scaled(1e3),
               note="a worker is a fresh interpreter (Popen of worker_main), like the spawn start method"),
        Result("8b", f"per-task: {n} no-op `--process` tasks, warm pool of {WORKERS}", "core", "ms/task",
               Stats.of(ours).scaled(per), f"ProcessPoolExecutor({WORKERS}, spawn), warm",
               Stats.of(spawn_w).scaled(per),
               note="each job: the pickled runner, two fresh output pipes, the environment only if it changed"),
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


def run(quick: bool) -> list[Result]:
    out: list[Result] = []
    for part in (_processes, _prompt):
        try:
            out.extend(part(quick))
        except Exception as e:
            out.append(skipped(f"8{'ab' if part is _processes else 'c'}", part.__name__.strip("_"), "core",
                               f"{type(e).__name__}: {e}"))
    out.append(skipped("8d", "ledger write cost per task", "core", "there is no ledger yet"))
    return out
