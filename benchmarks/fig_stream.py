"""Figure 4: a command writing a lot to stdout: MB/s against reading the same pipe raw, and peak memory."""
from __future__ import annotations

import gc
import os
import subprocess
import threading
import time

import psutil

from .harness import Result, Stats, fresh, log, settled
from .kernel import Kernel

LINE = "benchmark output line 0123456789 abcdefghijklmnopqrstuvwxyz"


def command(nbytes: int) -> str:
    return f"yes '{LINE}' | head -c {nbytes}"


class RssSampler:
    """Peak RSS of a process, sampled every few milliseconds on a thread."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.start_rss = self.proc.memory_info().rss
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.every)

    def stop(self) -> float:
        """Stop; return the peak growth in MB."""
        self._stop.set()
        self._t.join()
        try:
            self.peak = max(self.peak, self.proc.memory_info().rss)
        except psutil.Error:
            pass
        return (self.peak - self.start_rss) / 1e6


def _raw(nbytes: int, sample: bool) -> tuple[float, float]:
    """(seconds, peak RSS growth MB) reading the pipe with os.read and dropping the data."""
    gc.collect()
    s = RssSampler(os.getpid()) if sample else None
    t0 = time.perf_counter()
    p = subprocess.Popen(["bash", "-c", command(nbytes)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    got = 0
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        got += len(b)
    p.wait()
    el = time.perf_counter() - t0
    grow = s.stop() if s else 0.0
    if got != nbytes:
        raise RuntimeError(f"raw read got {got} bytes, not {nbytes}")
    return el, grow


def _ours(nbytes: int, sample: bool) -> tuple[float, float, float]:
    """(seconds, peak RSS growth MB during the run, RSS growth MB from reading the result's repr)."""
    from ttasks_ipy.core import BashRunner, Executor, TaskSpec

    ex = settled(Executor(max_workers=2))  # (which collects the garbage of earlier repeats)
    try:
        s = RssSampler(os.getpid()) if sample else None
        t0 = time.perf_counter()
        t = ex.submit(TaskSpec(BashRunner(command(nbytes))))
        t.wait(300)
        el = time.perf_counter() - t0
        grow = s.stop() if s else 0.0
        if not t.ok:
            raise RuntimeError(f"the task failed: {t.error}")
        total = t.output_buffer.total_chars("stdout")
        if total != nbytes:
            raise RuntimeError(f"the task saw {total} characters, not {nbytes}")
        after = 0.0
        if sample:
            s2 = RssSampler(os.getpid())
            _ = repr(t.result)  # what a notebook shows for `r`
            after = s2.stop()
        return el, grow, after
    finally:
        ex.shutdown()


def _print_flood(lines: int) -> tuple[float, float]:
    """(lines/s printed by a Python task, lines/s printed to an io.StringIO on a plain thread)."""
    import io

    from ttasks_ipy.core import CallRunner, Executor, TaskSpec

    def body(file: object = None) -> None:
        for i in range(lines):
            print("line", i, file=file)

    ex = settled(Executor(max_workers=2))
    try:
        t0 = time.perf_counter()
        t = ex.submit(TaskSpec(CallRunner(body)))
        t.wait(300)
        ours = time.perf_counter() - t0
        if not t.ok:
            raise RuntimeError(f"print task failed: {t.error}")
    finally:
        ex.shutdown()
    fresh()
    sink = io.StringIO()
    th = threading.Thread(target=body, args=(sink,))
    t0 = time.perf_counter()
    th.start()
    th.join()
    raw = time.perf_counter() - t0
    return lines / ours, lines / raw


def run(quick: bool) -> list[Result]:
    nbytes = 50_000_000 if quick else 200_000_000
    reps = 1 if quick else 3
    mb = nbytes / 1e6
    log(f"  4: {mb:.0f} MB through a bash task x {reps}, core")
    ours, raw = [], []
    for _ in range(reps):  # speed, without a sampler thread competing for the GIL
        raw.append(mb / _raw(nbytes, sample=False)[0])
        ours.append(mb / _ours(nbytes, sample=False)[0])
    ours_rss, repr_rss, raw_rss = [], [], []
    for _ in range(reps):  # memory, sampled every 5 ms
        raw_rss.append(_raw(nbytes, sample=True)[1])
        o = _ours(nbytes, sample=True)
        ours_rss.append(o[1])
        repr_rss.append(o[2])
    out = [
        Result("4a", f"output streaming: bash task writing {mb:.0f} MB to stdout", "core", "MB/s",
               Stats.of(ours), "os.read(64 KiB) of the same pipe, data dropped", Stats.of(raw), higher_is_better=True),
        Result("4b", f"peak RSS growth of the process during that task ({mb:.0f} MB written)", "core", "MB",
               Stats.of(ours_rss), "the raw read", Stats.of(raw_rss),
               note="bounded means it stays near the tail size (tail_chars) whatever is written"),
        Result("4c", "RSS growth from `repr(task.result)` of that command afterwards", "core", "MB",
               Stats.of(repr_rss), "", None,
               note="CommandResult.__repr__ reads only the in-memory tail"),
    ]
    nl = 50_000 if quick else 200_000
    log(f"  4: a Python task printing {nl} lines x {reps}")
    pf = [_print_flood(nl) for _ in range(reps)]
    out.append(Result("4g", f"Python task printing {nl:,} lines (`print('line', i)`)", "core", "lines/s",
                      Stats.of(o for o, _ in pf), "the same prints to an io.StringIO on a plain thread",
                      Stats.of(r for _, r in pf), higher_is_better=True,
                      note="each print() is 4 writes, coalesced per task into pieces of up to 16k characters or 50 ms"))
    log(f"  4: {mb:.0f} MB through `%bg -o r !...` in a kernel")
    out.extend(_kernel(nbytes, reps, Stats.of(raw)))
    return out


def _kernel(nbytes: int, reps: int, raw: Stats) -> list[Result]:
    mb = nbytes / 1e6
    speeds, text_speeds, peaks, raw_peaks, shown = [], [], [], [], []
    with Kernel() as k:
        k.run("import gc, os, time, threading, subprocess")
        for w in ("True", "False"):  # warm up both display paths (imports, first files)
            k.run(f"%config TTasks.widgets = {w}")
            k.run(f"_w = %bg -o _wr !{command(5_000_000)}")
            k.run("_w.wait(60); del _w, _wr")
        k.run("%config TTasks.widgets = True")
        for i in range(reps):
            k.run("gc.collect()")
            s = RssSampler(k.pid)
            k.run(f"h{i} = %bg -o r{i} !{command(nbytes)}")
            k.run(f"h{i}.wait(300);", timeout=320)
            peaks.append(s.stop())
            speeds.append(mb / _elapsed(k, f"h{i}", nbytes))
            # the same with the text display instead of the live card
            k.run("%config TTasks.widgets = False")
            k.run(f"t{i} = %bg -o q{i} !{command(nbytes)}")
            k.run(f"t{i}.wait(300);", timeout=320)
            k.run("%config TTasks.widgets = True")
            text_speeds.append(mb / _elapsed(k, f"t{i}", nbytes))
            # the same pipe read raw on a thread of the kernel
            k.run(f"del q{i}, t{i}; gc.collect()")
            s = RssSampler(k.pid)
            k.run(
                "def _rawread():\n"
                f"    p = subprocess.Popen(['bash', '-c', {command(nbytes)!r}], stdout=subprocess.PIPE)\n"
                "    while os.read(p.stdout.fileno(), 65536): pass\n"
                "    p.wait()\n"
                "_t = threading.Thread(target=_rawread); _t.start(); _t.join()"
            )
            raw_peaks.append(s.stop())
            s = RssSampler(k.pid)
            k.run(f"r{i}")  # the notebook shows the result: its repr
            shown.append(s.stop())
            k.run(f"del r{i}, h{i}; gc.collect()")
    return [
        Result("4d", f"output streaming: `%bg -o r !...` writing {mb:.0f} MB (task elapsed)", "magics", "MB/s",
               Stats.of(speeds), "raw os.read of the same pipe (4a)", raw, higher_is_better=True),
        Result("4d2", "the same with TTasks.widgets=False (text line instead of the card)", "magics", "MB/s",
               Stats.of(text_speeds), "raw os.read of the same pipe (4a)", raw, higher_is_better=True),
        Result("4e", f"kernel peak RSS growth while `%bg` streams {mb:.0f} MB (card shown)", "magics", "MB",
               Stats.of(peaks), "the same pipe read raw on a kernel thread", Stats.of(raw_peaks)),
        Result("4f", "kernel RSS growth when the next cell shows `r` (its repr)", "magics", "MB", Stats.of(shown),
               "", None),
    ]


def _elapsed(k: Kernel, handle: str, nbytes: int) -> float:
    ok, elapsed, total = k.value(f"({handle}.ok, {handle}.elapsed, {handle}.output_buffer.total_chars('stdout'))")
    if not ok or total != nbytes:
        raise RuntimeError(f"kernel task {handle}: ok={ok}, {total} characters of {nbytes}")
    return elapsed
