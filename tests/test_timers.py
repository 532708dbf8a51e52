"""The timer thread survives bad delays and failing callbacks (it is what ends cancelled process trees)."""
from __future__ import annotations

import ctypes
import threading
import time

import pytest
from helpers import no_process_left, wait_until

from ttasks_ipy.core import BashRunner, Executor, SpecError, TaskCancelled, TaskSpec
from ttasks_ipy.core.timers import MAX_DELAY, Timers, check_delay


@pytest.fixture
def timers():
    t = Timers("test-timers")
    yield t
    t.close()


def fires(timers: Timers, delay: float = 0.01, timeout: float = 5) -> bool:
    done = threading.Event()
    timers.schedule(delay, done.set)
    return done.wait(timeout)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 1e300, 10**400, MAX_DELAY * 2,
                                 "5", None, True])
def test_a_bad_delay_is_refused_at_the_call_and_the_thread_goes_on(timers, bad):
    assert fires(timers)  # the thread is running before
    with pytest.raises(SpecError, match="must be a"):
        timers.schedule(bad, lambda: None)
    with pytest.raises(ValueError):  # SpecError is a ValueError too
        timers.schedule(bad, lambda: None)
    assert fires(timers)
    assert timers.alive()


def test_a_bad_delay_as_first_call_starts_no_broken_thread(timers):
    with pytest.raises(SpecError, match=r"not inf"):
        timers.schedule(float("inf"), lambda: None)
    assert fires(timers)


def test_check_delay_names_what_was_wrong():
    wanted = r"^timeout must be a finite number of seconds up to \d+ \(10 years\), not 1e\+300$"
    with pytest.raises(SpecError, match=wanted):
        check_delay(1e300, "timeout")
    assert check_delay(-3) == 0.0
    assert check_delay(MAX_DELAY) == MAX_DELAY


class Odd(BaseException):
    pass


@pytest.mark.parametrize("exc", [ValueError("x"), SystemExit(3), KeyboardInterrupt(), Odd(), TaskCancelled("c"),
                                 GeneratorExit()])
def test_a_callback_raising_anything_is_logged_and_the_next_runs(timers, exc, caplog):
    def boom() -> None:
        raise exc

    timers.schedule(0, boom)
    assert fires(timers)
    assert timers.failures == 1
    assert timers.alive()
    assert "timer callback" in caplog.text


def test_timers_run_in_order_after_failures(timers):
    seen: list[int] = []
    done = threading.Event()

    def fail() -> None:
        raise SystemExit

    for i in (3, 1, 2):
        timers.schedule(0.01 * i, lambda i=i: seen.append(i))
        timers.schedule(0.01 * i, fail)
    timers.schedule(0.05, done.set)
    assert done.wait(5)
    assert seen == [1, 2, 3]


def test_a_stray_asynchronous_exception_does_not_end_the_thread(timers):
    ident: list[int] = []
    timers.schedule(0, lambda: ident.append(threading.get_ident()))
    wait_until(lambda: ident, 5, "first callback")
    later = threading.Event()
    timers.schedule(0.3, later.set)  # pending while the exception arrives
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident[0]), ctypes.py_object(SystemExit))
    timers.schedule(0, lambda: None)  # wakes the thread so that the exception is raised
    assert later.wait(5)
    assert fires(timers)
    assert timers.alive()


def test_after_an_absurd_timeout_a_cancelled_term_ignoring_command_is_still_killed():
    ex = Executor(grace=0.3)
    try:
        with pytest.raises(SpecError):
            ex.timers.schedule(1e300, lambda: None)
        t = ex.submit(TaskSpec(BashRunner("trap '' TERM; sleep 300", grace=0.3)))
        wait_until(lambda: t.pid is not None, 5, "command started")
        time.sleep(0.1)  # let bash run its trap before the SIGTERM
        ex.cancel(t)
        no_process_left(t.pid, 5)
        assert t.wait(5).status == "cancelled"
    finally:
        ex.shutdown()
