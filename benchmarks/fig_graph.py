"""Figure 3: graph scheduling overhead per task, and how it grows, against dask's local scheduler."""
from __future__ import annotations

import time

from .harness import Result, Stats, fresh, log, settled

WORKERS = 4


def noop(*_: object) -> None:
    return None


def _nodes(shape: str, n: int) -> list:
    from ttasks_ipy.core import CallRunner
    from ttasks_ipy.core.graph import GraphNode

    if shape == "chain":
        return [GraphNode(f"t{i}", CallRunner(noop), deps=(f"t{i - 1}",) if i else ()) for i in range(n)]
    return [GraphNode("t0", CallRunner(noop))] + [
        GraphNode(f"t{i}", CallRunner(noop), deps=("t0",)) for i in range(1, n)
    ]


def _dsk(shape: str, n: int) -> dict:
    if shape == "chain":
        return {f"t{i}": (noop, f"t{i - 1}") if i else (noop,) for i in range(n)}
    d: dict = {"t0": (noop,)}
    d.update({f"t{i}": (noop, "t0") for i in range(1, n)})
    return d


def _ours(shape: str, n: int) -> tuple[float, float]:
    """(seconds from building the GraphRun to its end, of which start() took)."""
    from ttasks_ipy.core import Executor
    from ttasks_ipy.core.graph import GraphRun

    nodes = _nodes(shape, n)
    ex = settled(Executor(max_workers=WORKERS))
    try:
        t0 = time.perf_counter()
        g = GraphRun(ex, "g", nodes)
        t1 = time.perf_counter()
        g.start()
        t2 = time.perf_counter()
        g.wait(600)
        t3 = time.perf_counter()
        if not g.ok:
            raise RuntimeError(f"graph failed: {g.error}")
        return t3 - t0, t2 - t1
    finally:
        ex.shutdown()


def _dask(shape: str, n: int, sync: bool = False) -> float:
    import dask
    import dask.threaded

    d = _dsk(shape, n)
    keys = list(d)
    fresh()
    t0 = time.perf_counter()
    if sync:
        dask.get(d, keys)
    else:
        dask.threaded.get(d, keys, num_workers=WORKERS)
    return time.perf_counter() - t0


def run(quick: bool) -> list[Result]:
    sizes = (100, 1000) if quick else (100, 1000, 10_000)
    out: list[Result] = []
    per_task: dict[tuple[str, int], tuple[float, float]] = {}
    for shape in ("chain", "fanout"):
        for n in sizes:
            reps = 1 if quick else 3
            log(f"  3: {shape} of {n} x {reps}")
            ours, starts, dsk, sync = [], [], [], []
            for _ in range(reps):
                total, start = _ours(shape, n)
                ours.append(total)
                starts.append(start)
                dsk.append(_dask(shape, n))
                sync.append(_dask(shape, n, sync=True))
            per = 1e6 / n
            o, b = Stats.of(ours).scaled(per), Stats.of(dsk).scaled(per)
            per_task[(shape, n)] = (o.median, b.median)
            what = "chain a->b->c..." if shape == "chain" else "fan-out: one root, the rest after it"
            out.append(Result(
                "3", f"graph {what}, {n:,} no-op tasks: build+start+wait", "core", "µs/task", o,
                f"dask.threaded.get, num_workers={WORKERS}", b,
                extra={"start_us_per_task": Stats.of(starts).scaled(per).median,
                       "dask_sync_us_per_task": Stats.of(sync).scaled(per).median},
            ))
    for shape in ("chain", "fanout"):
        small, big = per_task[(shape, sizes[0])], per_task[(shape, sizes[-1])]
        grow_o, grow_b = big[0] / small[0], big[1] / small[1]
        out.append(Result(
            "3", f"graph {shape}: growth of per-task cost, {sizes[-1]:,} vs {sizes[0]:,} tasks", "core", "x",
            Stats(grow_o, grow_o, grow_o, 1), "dask.threaded.get, same growth", Stats(grow_b, grow_b, grow_b, 1),
            note="" if shape == "fanout" else "1.0 = flat: the per-task cost does not depend on the graph's size",
        ))
    for i, r in enumerate(out):
        r.id = f"3{chr(ord('a') + i)}"
    return out
