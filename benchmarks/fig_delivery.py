"""Figure 7: from a task's end to its value in the namespace, kernel idle and at the end of a running cell.

The task's value is ``time.time()`` taken as its last act, so the task itself
says when it ended. Delivery writes the namespace and then updates the task's
own display (text mode: an ``update_display_data``; with widgets: a comm
message of the card), so the kernel's send time of that message (its header
date, same clock) bounds when the value was in the namespace.
"""
from __future__ import annotations

import time

from .harness import Result, Stats, log
from .kernel import Kernel, sent_at

SETUP = """
import time, threading
_ip = get_ipython()
_marks = []
def _raw_worker():
    time.sleep(0.15)
    end = time.time()
    _ip.kernel.io_loop.add_callback(lambda: _marks.append((end, time.time())))
_hook_marks = []
def _first_post_run_cell(*a):
    _hook_marks.append(time.time())
_ip.events.callbacks['post_run_cell'].insert(0, _first_post_run_cell)
"""

TASK = "%bg -o v{i} (time.sleep(0.15), time.time())[1]"


def _idle(k: Kernel, i: int, widgets: bool) -> float:
    """Seconds from the task's end to the message that shows its delivery, no cell running."""
    k.run(f"h{i} = " + TASK.format(i=i))
    k.idle.clear()  # older cards may still send updates: only this task's count
    label = k.value(f"h{i}.label")
    kind = "comm_msg" if widgets else "update_display_data"

    def shows_delivery(m: dict) -> bool:
        if m["msg_type"] != kind:
            return False
        if widgets:
            html = str(m["content"].get("data", {}).get("state", {}).get("value", ""))
            return f'data-task="{label}"' in html and 'data-status="succeeded"' in html
        return "v" + str(i) in m["content"]["data"].get("text/plain", "")

    msg = k.wait_idle_message(shows_delivery, 10)
    end, there = k.value(f"(v{i}, h{i}.result)")
    if there != end:
        raise RuntimeError(f"v{i} was not delivered")
    return sent_at(msg) - end


def _raw_idle(k: Kernel) -> float:
    k.run("_marks.clear(); threading.Thread(target=_raw_worker).start()")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        marks = k.value("_marks")
        if marks:
            return marks[0][1] - marks[0][0]
    raise RuntimeError("the raw io_loop callback never ran")


def _boundary(k: Kernel, i: int) -> tuple[float, float, float]:
    """(task end -> delivered, cell end -> delivered, cell end -> first post_run_cell hook), seconds."""
    k.run("_hook_marks.clear()")
    cell = k.run(f"h{i} = {TASK.format(i=i)}\ntime.sleep(0.45)\n_cell_end = time.time()")
    upd = [m for m in cell.messages if m["msg_type"] == "update_display_data"
           and f"v{i}" in m["content"]["data"].get("text/plain", "")]
    if not upd:
        raise RuntimeError("no display update at the end of the cell")
    end, cell_end, hooks = k.value(f"(v{i}, _cell_end, list(_hook_marks))")
    delivered = sent_at(upd[0])
    return delivered - end, delivered - cell_end, hooks[-1] - cell_end


def run(quick: bool) -> list[Result]:
    n = 5 if quick else 15
    out: list[Result] = []
    with Kernel() as k:
        k.run(SETUP)
        k.run("%config TTasks.widgets = False")
        log(f"  7: idle delivery x {n} (text display), raw io_loop callback x {n}")
        idle, raw = [], []
        for i in range(n):
            idle.append(_idle(k, i, widgets=False))
            raw.append(_raw_idle(k))
        out.append(Result("7a", "delivery, kernel idle: task end -> value in namespace (display updated)", "magics",
                          "ms", Stats.of(idle).scaled(1e3), "a thread's io_loop.add_callback, end -> callback runs",
                          Stats.of(raw).scaled(1e3)))
        log(f"  7: delivery at the end of a running cell x {n}")
        b_end, b_cell, b_hook = [], [], []
        for i in range(n, 2 * n):
            e, c, h = _boundary(k, i)
            b_end.append(e)
            b_cell.append(c)
            b_hook.append(h)
        out.append(Result("7b", "delivery at the next cell boundary: cell end -> value in namespace", "magics", "ms",
                          Stats.of(b_cell).scaled(1e3), "cell end -> first post_run_cell hook runs",
                          Stats.of(b_hook).scaled(1e3),
                          note=f"task end -> delivered was {Stats.of(b_end).median * 1e3:.0f} ms: the task ended "
                               "0.3 s before its cell did"))
        k.run("%config TTasks.widgets = True")
        log(f"  7: idle delivery x {n} with the live card")
        card = [_idle(k, i, widgets=True) for i in range(2 * n, 3 * n)]
        out.append(Result("7c", "delivery, kernel idle, live card: task end -> card shows the result", "magics",
                          "ms", Stats.of(card).scaled(1e3), "a thread's io_loop.add_callback (7a)",
                          Stats.of(raw).scaled(1e3),
                          note="the card is refreshed by the Updater thread (at most 10 pushes/s per card)"))
    return out
