"""Probe (not a benchmark): with a trace or profile function on, submitting Python tasks hangs.

    .venv/bin/python benchmarks/probe_trace_hang.py      # exit status 0: no hang, 1: hang

``pycode._Interruptible.__exit__`` calls ``PyThreadState_SetAsyncExc(tid, NULL)``
after every Python task. On CPython 3.11 that leaves the interpreter's
"async exception pending" flag set (only a thread whose own ``async_exc`` is
set clears it), so the eval breaker stays on; a thread running with
``sys.settrace``/``sys.setprofile`` (a debugger, coverage, cProfile, ``%prun``)
then loops for ever on the first instruction of the next Python function it
calls. Here: the main thread, inside ``threading.Thread.start``.
"""
from __future__ import annotations

import os
import sys
import threading
import time


def main() -> int:
    from ttasks_ipy.core import CallRunner, Executor, TaskSpec

    ex = Executor(max_workers=4)
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(10):
            print("HANG: 10 s without finishing 2,000 submits under sys.settrace", flush=True)
            os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.perf_counter()
    sys.settrace(lambda *a: None)
    try:
        for _ in range(2000):
            ex.submit(TaskSpec(CallRunner(int)))
    finally:
        sys.settrace(None)
    done.set()
    print(f"no hang: 2,000 submits under sys.settrace in {time.perf_counter() - t0:.2f}s")
    ex.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
