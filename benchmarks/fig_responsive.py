"""Figure 5: how fast a trivial cell comes back while 4 background tasks run, against an idle kernel."""
from __future__ import annotations

import time

import psutil

from .harness import Result, Stats, log
from .kernel import Kernel

TASKS = 4

#: scenario -> the %bg line started TASKS times (default display: a live card each)
SCENARIOS = {
    "sleeping": "%bg from ttasks_ipy import current_task; current_task().sleep(600)",
    "cpu_threads": "%bg while True: pass",
    "cpu_process": "%bg --process while True: pass",
    "flood": "%bg !yes 'flooding the output with this line'",
}

#: the same load made without ttasks_ipy, on plain threads of the kernel
RAW = {
    "cpu_threads": (
        "import threading as _th\n_stop = False\n"
        "def _spin():\n    while not _stop: pass\n"
        f"_ths = [_th.Thread(target=_spin, daemon=True) for _ in range({TASKS})]\n"
        "for _x in _ths: _x.start()"
    ),
    "flood": (
        "import threading as _th, subprocess as _sp, os as _os\n_stop = False\n"
        "def _read():\n"
        "    p = _sp.Popen(['yes', 'flooding the output with this line'], stdout=_sp.PIPE, start_new_session=True)\n"
        "    while not _stop and _os.read(p.stdout.fileno(), 65536): pass\n"
        "    p.kill(); p.wait()\n"
        f"_ths = [_th.Thread(target=_read, daemon=True) for _ in range({TASKS})]\n"
        "for _x in _ths: _x.start()"
    ),
}


def _cells(k: Kernel, n: int) -> tuple[list[float], float]:
    """Round trips of ``n`` trivial cells (ms), and the kernel's CPU use meanwhile (% of one core)."""
    proc = psutil.Process(k.pid)
    c0 = proc.cpu_times()
    t0 = time.monotonic()
    out = []
    for _ in range(n):
        out.append(k.run("1 + 1").seconds * 1e3)
        time.sleep(0.02)
    c1 = proc.cpu_times()
    cpu = (c1.user + c1.system - c0.user - c0.system) / (time.monotonic() - t0) * 100
    return out, cpu


def _start(k: Kernel, key: str, settle: float) -> None:
    for i in range(TASKS):
        k.run(f"_load{i} = {SCENARIOS[key]}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if k.value("[" + ", ".join(f"_load{i}.status" for i in range(TASKS)) + "]") == ["running"] * TASKS:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"{key}: the {TASKS} tasks did not all start")
    time.sleep(settle)  # let worker processes finish starting, floods fill their pipes


def _stop(k: Kernel) -> None:
    k.run("%bg --cancel all")
    k.run("_ = [" + ", ".join(f"_load{i}.wait(20)" for i in range(TASKS)) + "]", timeout=60)
    time.sleep(0.5)


def run(quick: bool) -> list[Result]:
    n = 6 if quick else 40
    settle = 0.3 if quick else 1.0
    out: list[Result] = []
    with Kernel() as k:
        k.run("%config TTasks.notices = False")
        for _ in range(5):
            k.run("1 + 1")
        idle, idle_cpu = _cells(k, n)
        log(f"  5: idle kernel: {Stats.of(idle).median:.1f} ms per trivial cell")
        labels = {
            "sleeping": "4 sleeping Python tasks",
            "cpu_threads": "4 CPU-bound Python tasks in threads (`while True: pass`)",
            "cpu_process": "4 CPU-bound `--process` tasks",
            "flood": "4 bash tasks flooding stdout (`yes`)",
        }
        for key in SCENARIOS:
            log(f"  5: {key}")
            _start(k, key, settle)
            m = max(3, n // 3) if key == "cpu_threads" else n  # each such cell takes most of a second
            busy, cpu = _cells(k, m)
            _stop(k)
            idle2, _ = _cells(k, max(3, n // 4))
            idle = idle + idle2
            out.append(Result("5", f"trivial cell round trip during {labels[key]}", "magics", "ms",
                              Stats.of(busy), "the same cell, kernel idle", Stats.of(idle),
                              note=f"kernel CPU {cpu:.0f}% of a core meanwhile (idle: {idle_cpu:.0f}%)",
                              extra={"kernel_cpu_percent": cpu, "scenario": key}))
            if key in RAW and not (quick and key == "cpu_threads"):  # those cells take most of a second
                log(f"  5: {key}, the same load on plain threads")
                k.run(RAW[key])
                time.sleep(settle)
                raw, raw_cpu = _cells(k, m)
                k.run("_stop = True\nfor _x in _ths: _x.join(10)", timeout=60)
                time.sleep(0.5)
                out.append(Result("5", f"trivial cell round trip during {labels[key]}", "magics", "ms",
                                  Stats.of(busy), "the same load on plain threads (no ttasks_ipy)", Stats.of(raw),
                                  note=f"kernel CPU {raw_cpu:.0f}% with the plain threads",
                                  extra={"kernel_cpu_percent": raw_cpu, "scenario": key + "_raw"}))
    for i, r in enumerate(out):
        r.id = f"5{chr(ord('a') + i)}"
    return out
