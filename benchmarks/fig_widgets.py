"""Figure 6: widget traffic under an output flood: comm messages per second and kernel CPU."""
from __future__ import annotations

import queue
import time

import psutil

from .harness import Result, Stats, log, skipped
from .kernel import Kernel

#: floods whose lines differ (a tail of identical lines would render the same card and send nothing)
BASH_FLOOD = "!seq 1000000000000"
PY_FLOOD = "for i in range(10**12): print('line', i)"

#: a widget updated on every OUTPUT event from the publishing thread: what the Updater exists to avoid
NAIVE = """
import ipywidgets as _wd
from IPython.display import display as _display
from ttasks_ipy.core import EventKind as _EK
_naive = _wd.HTML()
_display(_naive)
def _naive_update(ev):
    if ev.kind is _EK.OUTPUT:
        _naive.value = ev.data["text"][-2000:]
_unsub = _s.executor.bus.subscribe(_naive_update)
"""


def _window(k: Kernel, seconds: float) -> tuple[float, float]:
    """(comm_msg per second arriving from the kernel, kernel CPU % of one core) over ``seconds``."""
    proc = psutil.Process(k.pid)
    c0 = proc.cpu_times()
    t0 = time.monotonic()
    end = t0 + seconds
    n = 0
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            msg = k.kc.get_iopub_msg(timeout=left)
        except queue.Empty:
            break
        if msg["msg_type"] == "comm_msg":
            n += 1
    el = time.monotonic() - t0
    c1 = proc.cpu_times()
    return n / el, (c1.user + c1.system - c0.user - c0.system) / el * 100


def _flood(k: Kernel, body: str, tasks: int, seconds: float, quiet: bool = False) -> dict[str, float]:
    """Start ``tasks`` floods, measure a window, cancel them; what the window saw."""
    for i in range(tasks):
        k.run(f"_f{i} = %bg {'--quiet ' if quiet else ''}{body}")
    time.sleep(0.3)
    chars = "sum(t.output_buffer.total_chars('stdout') for t in [" + ", ".join(f"_f{i}" for i in range(tasks)) + "])"
    k.run(f"_c0 = {chars}; _u0 = _s.updater.statistics().cpu")
    k.collect_idle(0)
    t0 = time.monotonic()
    rate, cpu = _window(k, seconds)
    mb, upd = k.value(f"(({chars}) - _c0) / 1e6, _s.updater.statistics().cpu - _u0")
    el = time.monotonic() - t0
    k.run("%bg --cancel all")
    k.run("_ = [" + ", ".join(f"_f{i}.wait(20)" for i in range(tasks)) + "]", timeout=60)
    time.sleep(0.3)
    k.collect_idle(0.2)
    return {"msgs": rate, "cpu": cpu, "mbps": mb / el, "cpu_ms_per_mb": cpu * 10 / max(mb / el, 1e-9),
            "updater_cpu": upd / el * 100}


def run(quick: bool) -> list[Result]:
    seconds = 1.0 if quick else 3.0
    reps = 1 if quick else 2
    with Kernel() as k:
        k.run("%config TTasks.notices = False")
        k.run("import ttasks_ipy.kernel.extension as _e; _s = _e.session()")
        if not k.value("_s.widgets()"):
            return [skipped("6", "widget traffic", "magics", "widgets are not available in this kernel")]
        try:
            k.run("from ttasks_ipy.views import task_card")
        except RuntimeError as e:
            return [skipped("6", "widget traffic", "magics", f"ttasks_ipy.views has no task card: {e}")]
        k.collect_idle(0.3)
        idle_rate, idle_cpu = _window(k, 1.0)
        res: dict[str, list[dict[str, float]]] = {}

        def measure(key: str, body: str, tasks: int = 1, setup: str = "", teardown: str = "",
                    quiet: bool = False) -> None:
            for _ in range(reps):
                if setup:
                    k.run(setup)
                res.setdefault(key, []).append(_flood(k, body, tasks, seconds, quiet))
                if teardown:
                    k.run(teardown)

        text_on, text_off = "%config TTasks.widgets = False", "%config TTasks.widgets = True"
        log(f"  6: bash flood, {seconds}s windows x {reps}: card, naive widget, text")
        measure("card", BASH_FLOOD)
        measure("naive", BASH_FLOOD, setup=NAIVE, teardown="_unsub(); _naive.close()", quiet=True)
        measure("text", BASH_FLOOD, setup=text_on, teardown=text_off)
        log("  6: 4 bash floods with cards" + ("" if quick else "; a Python print flood"))
        measure("card4", BASH_FLOOD, tasks=4)
        if not quick:
            measure("text4", BASH_FLOOD, tasks=4, setup=text_on, teardown=text_off)
            measure("pycard", PY_FLOOD)
            measure("pytext", PY_FLOOD, setup=text_on, teardown=text_off)

    def st(key: str, field: str) -> Stats:
        return Stats.of(r[field] for r in res[key])

    def flood_note(key: str) -> str:
        return (f"flood {st(key, 'mbps').median:.3g} MB/s, kernel CPU {st(key, 'cpu').median:.0f}% of a core, "
                f"updater thread {st(key, 'updater_cpu').median:.1f}%")

    out = [
        Result("6a", "comm messages/s, 1 bash task flooding stdout (`seq`), live card", "magics", "msg/s",
               st("card", "msgs"), "a widget set on every OUTPUT event (naive)", st("naive", "msgs"),
               note=f"idle kernel: {idle_rate:.1f} msg/s, {idle_cpu:.0f}% CPU; card: {flood_note('card')}; "
                    f"naive: {flood_note('naive')}"),
        Result("6b", "kernel CPU per MB of output, 1 bash flood, live card", "magics", "ms/MB",
               st("card", "cpu_ms_per_mb"), "the same flood, text display (no widget)", st("text", "cpu_ms_per_mb"),
               note=f"text: {flood_note('text')}"),
        Result("6c", "kernel CPU per MB of output, 1 bash flood, naive per-event widget", "magics", "ms/MB",
               st("naive", "cpu_ms_per_mb"), "the same flood, text display (no widget)",
               st("text", "cpu_ms_per_mb")),
        Result("6d", "comm messages/s, 4 bash floods, 4 live cards", "magics", "msg/s", st("card4", "msgs"),
               "", None, note="the Updater allows 10/s per card and 50/s in all; " + flood_note("card4")),
    ]
    if not quick:
        out += [
            Result("6e", "kernel CPU per MB of output, 4 bash floods, live cards", "magics", "ms/MB",
                   st("card4", "cpu_ms_per_mb"), "the same floods, text display", st("text4", "cpu_ms_per_mb")),
            Result("6f", "comm messages/s, 1 Python task printing lines in a loop, live card", "magics", "msg/s",
                   st("pycard", "msgs"), "", None, note=flood_note("pycard")),
            Result("6g", "kernel CPU per MB of output, 1 Python print flood, live card", "magics", "ms/MB",
                   st("pycard", "cpu_ms_per_mb"), "the same flood, text display", st("pytext", "cpu_ms_per_mb"),
                   note="text: " + flood_note("pytext")),
        ]
    return out
