"""Per-thread output capture (``ttasks_ipy.core.capture``) under threads that print while tasks come and go."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: the main thread prints through sys.stdout while Python tasks start and end on other threads
#: (each one installs and uninstalls the stream routers): a router freed under a print crashed
#: CPython before 3.13 (python/cpython#130163), so it runs in a process of its own
CHURN = textwrap.dedent("""
    import io, sys, threading
    from ttasks_ipy.core import CallRunner, Executor, TaskSpec
    out = io.StringIO()
    sys.stdout = out
    sys.setswitchinterval(1e-6)
    ex = Executor(max_workers=4)
    stop = threading.Event()
    ran = [0]
    def submitter():
        while not stop.is_set():
            tasks = [ex.submit(TaskSpec(CallRunner(int))) for _ in range(50)]
            ex.wait(tasks, timeout=60)
            ran[0] += len(tasks)
    t = threading.Thread(target=submitter)
    t.start()
    try:
        for i in range(100_000):
            print("line", i)
    finally:
        stop.set()
        t.join(60)
        ex.shutdown()
    sys.stdout = sys.__stdout__
    lines = out.getvalue().splitlines()
    print(len(lines), lines[-1], ran[0] > 0)
""")


@pytest.mark.timeout(180)
def test_printing_while_python_tasks_come_and_go_does_not_crash():
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHURN], capture_output=True,
                              text=True, timeout=150)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == ["100000", "line", "99999", "True"], proc.stdout


def test_a_task_writing_both_streams_keeps_their_order_while_the_timer_flushes(tmp_path):
    import time


    def body() -> None:
        for i in range(3000):
            print("out", i)
            if i % 7 == 0:
                print("err", i, file=sys.stderr)
            if i % 500 == 0:
                time.sleep(0.06)  # past the coalescing delay: the timer thread flushes meanwhile

    t, pieces = _run_with_output_events(body, tmp_path)
    want = []
    for i in range(3000):
        want.append(("stdout", f"out {i}\n"))
        if i % 7 == 0:
            want.append(("stderr", f"err {i}\n"))
    got = [(stream, line) for stream, text in pieces for line in text.splitlines(keepends=True)]
    assert got == want
    assert len(pieces) < len(want) / 3, "writes were not coalesced"
    assert t.output_buffer.read("stdout") == "".join(text for s, text in want if s == "stdout")


def test_the_streams_are_given_back_once_the_pool_threads_are_gone(tmp_path):
    from helpers import wait_until

    from ttasks_ipy.core import CallRunner, Executor, TaskSpec

    before_out, before_err = sys.stdout, sys.stderr
    ex = Executor(max_workers=2, output_dir=tmp_path)
    try:
        tasks = [ex.submit(TaskSpec(CallRunner(print, (f"task {i}",)))) for i in range(6)]
        ex.wait(tasks, timeout=30)
        assert [t.output for t in tasks] == [f"task {i}\n" for i in range(6)]
        print("from the test")  # the main thread's own writes pass through to where they went before
    finally:
        ex.shutdown()
    wait_until(lambda: sys.stdout is before_out and sys.stderr is before_err, 10, "the streams given back")


def test_empty_writes_in_a_task_neither_reorder_nor_add_output(tmp_path):


    def body() -> None:
        print("a")
        sys.stderr.write("")  # an empty write to the other stream
        print(end="")
        print("b")
        print("c", file=sys.stderr)

    t, pieces = _run_with_output_events(body, tmp_path)
    assert all(text for _, text in pieces), pieces
    assert "".join(text for s, text in pieces if s == "stdout") == "a\nb\n"
    assert [s for s, _ in pieces][-1] == "stderr" and t.stderr == "c\n"


def _run_with_output_events(body, tmp_path):
    """Run ``body`` as a task; return the task and its OUTPUT events' (stream, text), in order."""
    from helpers import Recorder

    from ttasks_ipy.core import CallRunner, EventKind, Executor, TaskSpec

    ex = Executor(max_workers=2, output_dir=tmp_path)
    try:
        rec = Recorder(ex)
        t = ex.submit(TaskSpec(CallRunner(body)))
        assert t.wait(60) and t.ok, t.error
        return t, [(e.data["stream"], e.data["text"]) for e in rec.events if e.kind is EventKind.OUTPUT]
    finally:
        ex.shutdown()


def test_a_task_captures_its_prints_after_the_streams_were_replaced(tmp_path):
    import contextlib
    import io

    from ttasks_ipy.core import CallRunner, Executor, TaskSpec

    ex = Executor(max_workers=1, output_dir=tmp_path)  # one pool thread runs both tasks
    try:
        first = ex.submit(TaskSpec(CallRunner(print, ("one",))))
        assert first.wait(10) and first.ok
        replaced = io.StringIO()
        with contextlib.redirect_stdout(replaced):  # as a cell or a test's capture does
            second = ex.submit(TaskSpec(CallRunner(print, ("two",))))
            assert second.wait(10) and second.ok
            print("main")  # the main thread's own prints still go where it sent them
        assert (first.output, second.output) == ("one\n", "two\n")
        assert replaced.getvalue() == "main\n"
    finally:
        ex.shutdown()
