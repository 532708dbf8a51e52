"""Figure 9: the Dask backend on a 2-worker ``LocalCluster``, against bare Dask futures on the same cluster.

9a: 10,000 no-op Python tasks through the executor and ``DaskBackend``
(pickled runner, a reply event per task, the value back in the kernel) vs
``client.submit(noop)`` for each and one ``wait``. 9b/9c: graphs of 1,000
no-op tasks (a chain, a fan-out) run by ``GraphRun`` on the Dask backend vs
the same graph as futures with dependencies. Ours and the baseline take
turns, repeat after repeat, so the machine's load changes both alike.
"""
from __future__ import annotations

import time
from typing import Any

from .harness import Result, Stats, log

WORKERS = 2


def noop(*_: object) -> None:
    return None


def _runner() -> Any:
    from ttasks_ipy.core import compile_body
    from ttasks_ipy.core.runners.portable import PortablePython

    r = PortablePython(compile_body("None", "<bench>"), {})
    r.needs_worker_slot = False  # as the magics make it: the cluster queues Dask tasks, not the kernel's slots
    return r


def _ours_tasks(ex: Any, n: int) -> float:
    from ttasks_ipy.core import TaskSpec

    t0 = time.perf_counter()
    tasks = [ex.submit(TaskSpec(_runner(), backend="dask")) for _ in range(n)]
    ex.wait(tasks, timeout=900)
    el = time.perf_counter() - t0
    bad = [t for t in tasks if not t.ok]
    if bad:
        raise RuntimeError(f"{len(bad)} Dask tasks failed: {bad[0].error}")
    return el


def _bare_tasks(client: Any, n: int) -> float:
    import distributed

    t0 = time.perf_counter()
    futures = [client.submit(noop, pure=False) for _ in range(n)]
    with client.as_current():
        distributed.wait(futures)
    el = time.perf_counter() - t0
    del futures
    return el


def _ours_graph(ex: Any, shape: str, n: int) -> float:
    from ttasks_ipy.core.graph import GraphNode, GraphRun

    if shape == "chain":
        nodes = [GraphNode(f"t{i}", _runner(), deps=(f"t{i - 1}",) if i else (), backend="dask") for i in range(n)]
    else:
        nodes = [GraphNode("t0", _runner(), backend="dask")] + [
            GraphNode(f"t{i}", _runner(), deps=("t0",), backend="dask") for i in range(1, n)]
    t0 = time.perf_counter()
    g = GraphRun(ex, "g", nodes)
    g.start()
    g.wait(900)
    el = time.perf_counter() - t0
    if not g.ok:
        raise RuntimeError(f"graph failed: {g.error}")
    return el


def _bare_graph(client: Any, shape: str, n: int) -> float:
    import distributed

    t0 = time.perf_counter()
    if shape == "chain":
        futures = [client.submit(noop, pure=False)]
        for _ in range(1, n):
            futures.append(client.submit(noop, futures[-1], pure=False))
    else:
        root = client.submit(noop, pure=False)
        futures = [root] + [client.submit(noop, root, pure=False) for _ in range(1, n)]
    with client.as_current():
        distributed.wait(futures)
    el = time.perf_counter() - t0
    del futures
    return el


def run(quick: bool) -> list[Result]:
    from ttasks_ipy.core import Executor
    from ttasks_ipy.core.backends.dask import connect

    n_tasks = 1000 if quick else 10_000
    n_graph = 300 if quick else 1000
    reps = 2
    t0 = time.perf_counter()
    backend = connect("", workers=WORKERS, threads_per_worker=1)
    startup = time.perf_counter() - t0
    ex = Executor(max_workers=4)
    ex.add_backend(backend)
    client = backend.client
    try:
        _ours_tasks(ex, 200)  # warm: imports on the workers, the forwarders' threads
        _bare_tasks(client, 200)
        ours, bare = [], []
        for i in range(reps):
            log(f"  9: {n_tasks} no-op tasks, repeat {i + 1} of {reps}")
            ours.append(_ours_tasks(ex, n_tasks))
            bare.append(_bare_tasks(client, n_tasks))
            log(f"  9:   ours {ours[-1]:.2f}s, bare {bare[-1]:.2f}s")
        graphs: dict[str, tuple[list[float], list[float]]] = {}
        for shape in ("chain", "fanout"):
            g_ours, g_bare = [], []
            for i in range(reps):
                log(f"  9: graph {shape} of {n_graph}, repeat {i + 1} of {reps}")
                g_ours.append(_ours_graph(ex, shape, n_graph))
                g_bare.append(_bare_graph(client, shape, n_graph))
                log(f"  9:   ours {g_ours[-1]:.2f}s, bare {g_bare[-1]:.2f}s")
            graphs[shape] = (g_ours, g_bare)
    finally:
        ex.shutdown()
    per = 1e6 / n_tasks
    gper = 1e6 / n_graph
    out = [
        Result("9a", f"{n_tasks:,} no-op Python tasks through the Dask backend, {WORKERS}-worker LocalCluster",
               "core", "µs/task", Stats.of(ours).scaled(per),
               "client.submit(noop) each + distributed.wait, same cluster", Stats.of(bare).scaled(per),
               note=f"ours brings each value back to the kernel (a reply event per task, replies of a busy worker "
                    f"sent together); the baseline fetches none; LocalCluster start-up {startup:.1f}s, not counted",
               extra={"startup_s": startup}),
    ]
    shapes = (("9b", "chain", "chain a->b->c..."), ("9c", "fanout", "fan-out: one root, the rest after it"))
    for rid, shape, what in shapes:
        g_ours, g_bare = graphs[shape]
        out.append(Result(rid, f"graph {what}, {n_graph:,} no-op tasks on the Dask backend: build+start+wait",
                          "core", "µs/task", Stats.of(g_ours).scaled(gper),
                          "the same graph as Dask futures with dependencies, same cluster",
                          Stats.of(g_bare).scaled(gper),
                          note="our graph machinery releases each task when its dependencies ended in the kernel; "
                               "Dask resolves dependencies on the scheduler" if shape == "chain" else ""))
    return out
