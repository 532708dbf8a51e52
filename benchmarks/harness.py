"""What every figure shares: repeated measurement, the result record, the table.

A figure is one number measured for ttasks_ipy (``value``) beside the same
number for its baseline (``baseline``), both measured in the same run, each
as min/median/max over repeats. ``ratio`` is always *ttasks cost / baseline
cost* on the medians: above 1 means ttasks_ipy is slower, uses more, or
responds later; for figures where more is better (MB/s, tasks/s) the ratio is
inverted so that the reading stays the same. ``via`` says what was driven:
``magics`` (``%bg`` in a real kernel through jupyter_client) or ``core``
(``ttasks_ipy.core`` called from this process).
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Stats:
    """min/median/max of a series of measurements (in ``unit``)."""

    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        v = sorted(float(x) for x in values)
        if not v:
            raise ValueError("no measurements")
        return cls(v[0], statistics.median(v), v[-1], len(v))

    def scaled(self, k: float) -> Stats:
        """The same series in another unit (``k`` times each value)."""
        lo, hi = sorted((self.min * k, self.max * k))
        return Stats(lo, self.median * k, hi, self.n)


@dataclass
class Result:
    """One row of the table."""

    id: str
    figure: str
    via: str  # 'magics' | 'core' | 'magics+core'
    unit: str
    value: Stats | None
    baseline_name: str = ""
    baseline: Stats | None = None
    higher_is_better: bool = False
    note: str = ""
    skipped: str = ""  # the reason, when the figure could not be measured
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None:
            return None
        ours, base = self.value.median, self.baseline.median
        if self.higher_is_better:
            ours, base = base, ours
        if base <= 0 or abs(base) < 1e-12:
            return None
        return ours / base

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def skipped(id_: str, figure: str, via: str, reason: str) -> Result:
    """A row saying why a figure was not measured."""
    return Result(id_, figure, via, "", None, skipped=reason)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took (wall clock), with the collector quiet."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeat(fn: Callable[[], float], n: int, warmup: int = 0) -> list[float]:
    """Call ``fn`` (which returns one measurement) ``warmup + n`` times; keep the last ``n``."""
    for _ in range(warmup):
        fn()
    return [fn() for _ in range(n)]


def interleave(fns: dict[str, Callable[[], float]], n: int, warmup: int = 1) -> dict[str, list[float]]:
    """Measure several variants in turns (a, b, a, b, ...) so drift on a shared machine hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for k, fn in fns.items():
            out[k].append(fn())
    return out


# ---- the machine -----------------------------------------------------------
def fresh() -> None:
    """Start a timed repeat with no garbage left by the ones before it (ours and baselines alike).

    An executor and its tasks refer to each other, so the executor of an
    earlier repeat, with its 10,000 tasks, is freed only by a full collection
    of the cyclic garbage collector; left alone, that collection falls inside
    a later repeat (of either side) and costs it several µs per task. A
    kernel's executor lives for the session and is never such garbage.
    """
    gc.collect()


def children_quiet(timeout: float = 5.0) -> None:
    """Return once every process this one started (and theirs) sleeps with its CPU time still.

    A pool of worker processes (ours or ``ProcessPoolExecutor``'s) that has just
    answered its first tasks may still be finishing its boot; on two cores that
    would fall inside the measurement of whichever side comes next. Bounded by
    ``timeout``; then the garbage of earlier repeats is collected (``fresh``).
    """
    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + timeout

    def reading() -> dict[int, tuple[float, str]]:
        out = {}
        for p in me.children(recursive=True):
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    out[p.pid] = (t.user + t.system, p.status())
            except psutil.Error:
                continue
        return out

    last = reading()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = reading()
        if now == last and all(status == psutil.STATUS_SLEEPING for _, status in now.values()):
            break
        last = now
    fresh()


def settled(ex: Any, timeout: float = 5.0) -> Any:
    """Return the executor ``ex`` once its helper processes (reaper, supervisor) have booted.

    A new ``Executor`` starts two Python processes that take tens of
    milliseconds of CPU to boot; on two cores that boot would fall inside a
    short measurement. A kernel's executor lives for the session, so figures
    that make one per repeat wait for this first: each helper is asleep and its
    CPU time stopped growing (read from /proc; bounded by ``timeout``). The
    garbage of earlier repeats is collected last (``fresh``).
    """
    pids = [p for p in (ex.reaper.pid, ex.supervisor.pid) if p]
    deadline = time.monotonic() + timeout

    def cpu_and_state(pid: int) -> tuple[int, str]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0, "gone"
        return int(fields[11]) + int(fields[12]), fields[0]

    last = [cpu_and_state(p) for p in pids]
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = [cpu_and_state(p) for p in pids]
        if now == last and all(state in ("S", "gone") for _, state in now):
            break
        last = now
    fresh()
    return ex


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for mod in ("ipykernel", "IPython", "jupyter_client", "ipywidgets", "dask", "distributed"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except Exception:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "memory_gb": mem_gb,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        **versions,
    }


# ---- the table -------------------------------------------------------------
def _num(x: float) -> str:
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2g}"


def fmt_stats(s: Stats | None, unit: str) -> str:
    if s is None:
        return "-"
    if s.n == 1:
        return f"{_num(s.median)} {unit}"
    return f"{_num(s.median)} {unit} ({_num(s.min)}-{_num(s.max)})"


def fmt_ratio(r: Result) -> str:
    x = r.ratio
    if x is None:
        return "-"
    if x < 0.01:
        return f"{x:.2g}x"
    return f"{x:.2f}x" if x < 10 else f"{x:.0f}x"


def table(results: list[Result], markdown: bool = False) -> str:
    """The results as a text table (or a Markdown one)."""
    head = ["#", "figure", "via", "ttasks_ipy median (min-max)", "baseline", "baseline median (min-max)", "ratio"]
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.id, r.figure, r.via, f"skipped: {r.skipped}", "", "", ""])
            continue
        rows.append([
            r.id, r.figure, r.via, fmt_stats(r.value, r.unit), r.baseline_name or "-",
            fmt_stats(r.baseline, r.unit), fmt_ratio(r),
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
        for row in rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)
