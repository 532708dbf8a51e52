"""Figure 1: dispatch latency, through the magics (a real kernel) and through the core."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from .harness import Result, Stats, interleave, log
from .kernel import Kernel


def noop() -> None:
    return None


def run(quick: bool) -> list[Result]:
    return [*_kernel(quick), *_core(quick)]


def _kernel(quick: bool) -> list[Result]:
    n = 15 if quick else 60
    out = []
    with Kernel() as k:
        k.run("%config TTasks.notices = False")  # notices of earlier cells would land in the next timed cell
        log(f"  1: {n} cells of each kind")
        cells = {
            "empty": lambda: k.run("pass").seconds,
            "quiet": lambda: k.run("_h = %bg --quiet 1").seconds,
            "card": lambda: k.run("%bg 1").seconds,
            "bash": lambda: k.run("_h = %bg --quiet !true").seconds,
            "script": lambda: k.run("%%script bash --bg --out _o\ntrue").seconds,
        }
        t = interleave(cells, n, warmup=2)
        k.run("%config TTasks.widgets = False")
        t2 = interleave({"empty": cells["empty"], "text": lambda: k.run("%bg 1").seconds}, n, warmup=2)
        k.run("%config TTasks.widgets = True")
        empty = Stats.of(t["empty"] + t2["empty"]).scaled(1e3)
        out.append(Result("1a", "dispatch: cell `_h = %bg --quiet 1` (nothing shown), round trip", "magics", "ms",
                          Stats.of(t["quiet"]).scaled(1e3), "empty cell `pass`", empty))
        out.append(Result("1b", "dispatch: cell `%bg 1` (default display: live card), round trip", "magics", "ms",
                          Stats.of(t["card"]).scaled(1e3), "empty cell `pass`", empty))
        out.append(Result("1c", "dispatch: cell `%bg 1` with TTasks.widgets=False (text line), round trip",
                          "magics", "ms", Stats.of(t2["text"]).scaled(1e3), "empty cell `pass`", empty))
        out.append(Result("1d", "dispatch: cell `_h = %bg --quiet !true`, round trip", "magics", "ms",
                          Stats.of(t["bash"]).scaled(1e3), "`%%script bash --bg` cell",
                          Stats.of(t["script"]).scaled(1e3)))
        # inside the kernel, no messaging: the magic call itself vs a thread pool's submit
        reps = 100 if quick else 400
        code = f"""
import time as _t
from concurrent.futures import ThreadPoolExecutor as _TPE
_ip = get_ipython()
_pool = _TPE(4)
_a, _b = [], []
for _i in range({reps}):
    _s = _t.perf_counter(); _ip.run_line_magic('bg', '--quiet 1'); _a.append(_t.perf_counter() - _s)
    _s = _t.perf_counter(); _pool.submit(int); _b.append(_t.perf_counter() - _s)
    _t.sleep(0.001)
_pool.shutdown()
"""
        k.run(code, timeout=120)
        a = k.value("_a")
        b = k.value("_b")
        out.append(Result("1e", "dispatch: `%bg --quiet 1` magic call inside the kernel", "magics", "µs",
                          Stats.of(a).scaled(1e6), "ThreadPoolExecutor.submit in the kernel", Stats.of(b).scaled(1e6),
                          note=f"{reps} calls, timed in the kernel (no messaging)"))
        k.run("%bg --wait all --timeout 30")
    return out


def _core(quick: bool) -> list[Result]:
    from ttasks_ipy.core import CallRunner, Executor, TaskSpec

    n = 300 if quick else 2000
    log(f"  1: {n} core submits with a free worker slot")
    ex = Executor(max_workers=4)
    pool = ThreadPoolExecutor(4)
    ours, theirs = [], []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            task = ex.submit(TaskSpec(CallRunner(noop)))
            ours.append(time.perf_counter() - t0)
            task.wait(10)
            t0 = time.perf_counter()
            f = pool.submit(noop)
            theirs.append(time.perf_counter() - t0)
            f.result(10)
    finally:
        ex.shutdown()
        pool.shutdown()
    return [Result("1f", "dispatch: Executor.submit(TaskSpec(CallRunner(f))), free slot", "core", "µs",
                   Stats.of(ours).scaled(1e6), "ThreadPoolExecutor.submit(f)", Stats.of(theirs).scaled(1e6),
                   note=f"{n} calls, each waited for before the next")]
