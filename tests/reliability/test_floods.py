"""Output floods through the core ``Executor``: memory stays bounded and the tail is exactly right.

Bash commands write a stream without newlines, random bytes (invalid UTF-8),
and many short lines; a Python task prints many lines. While each streams, a
sampler thread records the peak RSS of this process; the growth must stay
bounded, the task must succeed, and ``output_buffer.tail()`` must be exactly
the last ``tail_chars`` characters of what was written (computed here on
our own).

The reduced form runs by default; ``TTASKS_RELIABILITY=full`` writes 1 GB
without newlines and a million lines.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from ttasks_ipy.core import BashRunner, CallRunner, Executor, TaskSpec, TaskState

FULL = os.environ.get("TTASKS_RELIABILITY") == "full"
NO_NEWLINES = (1 << 30) if FULL else (100 << 20)
LINES = 1_000_000 if FULL else 100_000
PY_LINES = 200_000
RANDOM_BYTES = (64 << 20) if FULL else (4 << 20)
TAIL = 65_536
#: what the process may grow by while a flood streams (the output is in files, only a tail in memory)
RSS_BOUND = 80 << 20

pytestmark = pytest.mark.timeout(900 if FULL else 60)


class PeakRSS:
    """Samples this process's RSS every 5 ms on a thread; ``growth`` is the peak above the start."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak - self.start


@pytest.fixture
def ex(tmp_path) -> Iterator[Executor]:
    (tmp_path / "out").mkdir()
    e = Executor(max_workers=2, output_dir=tmp_path / "out", tail_chars=TAIL)
    yield e
    e.shutdown()


def flood(ex: Executor, runner, label: str, want_tail: str, timeout: float = 600) -> str:
    """Run ``runner``, check success, bounded memory and the exact tail; returns the counts line."""
    rss = PeakRSS()
    t0 = time.monotonic()
    t = ex.submit(TaskSpec(runner))
    t.wait(timeout)
    seconds = time.monotonic() - t0
    growth = rss.stop()
    tail = t.output_buffer.tail()
    total = t.output_buffer.total_chars()
    counts = (f"{label}: {t.state.value} in {seconds:.2f}s, {total:,} chars written, "
              f"peak RSS growth {growth / 2**20:.1f} MiB, tail {len(tail)} chars")
    print(f"\n[floods] {counts}")
    assert t.state is TaskState.SUCCEEDED, f"{t.reason} ({counts})"
    assert growth < RSS_BOUND, counts
    assert len(tail) == len(want_tail), counts
    assert tail == want_tail, f"the tail differs from what was written ({counts})"
    return counts


def test_no_newlines(ex):
    flood(ex, BashRunner(f"head -c {NO_NEWLINES} /dev/zero | tr '\\0' x"), f"{NO_NEWLINES:,} bytes, no newline",
          "x" * TAIL)


def test_invalid_utf8(ex, tmp_path):
    data = os.urandom(RANDOM_BYTES)
    src = tmp_path / "random.bin"
    src.write_bytes(data)
    want = data.decode("utf-8", errors="replace")[-TAIL:]
    assert "\ufffd" in want
    flood(ex, BashRunner(f"cat {src}"), f"{RANDOM_BYTES:,} random bytes", want)


def test_urandom_stream(ex):
    t = ex.submit(TaskSpec(BashRunner(f"head -c {RANDOM_BYTES} /dev/urandom")))
    t.wait(120)
    assert t.state is TaskState.SUCCEEDED, t.reason
    tail = t.output_buffer.tail()
    assert len(tail) == TAIL and "\ufffd" in tail


def test_many_short_lines(ex):
    want = "".join(f"{i}\n" for i in range(max(1, LINES - 20000), LINES + 1))[-TAIL:]
    flood(ex, BashRunner(f"seq 1 {LINES}"), f"{LINES:,} lines from bash", want)


def print_lines(n: int) -> int:
    for i in range(n):
        print(i)
    return n


def test_python_prints_many_lines(ex):
    want = "".join(f"{i}\n" for i in range(PY_LINES - 20000, PY_LINES))[-TAIL:]
    flood(ex, CallRunner(print_lines, (PY_LINES,)), f"{PY_LINES:,} lines printed by Python", want)
