"""The updater's promise to readers, under stress: after ``wait_idle()`` a view shows the latest state.

``wait_idle`` means "no push in progress and nothing dirty"; a card's state
changes in an order a reader can rely on (its HTML first, its ``status``
last). These tests force thread switches every microsecond so that a push
caught half-way is found if it can be.
"""
from __future__ import annotations

import importlib.util
import random
import sys
import threading
import time

import pytest

from ttasks_ipy.core import CallRunner, EventBus, EventKind, Executor, TaskEvent, TaskSpec
from ttasks_ipy.views import Updater

pytestmark = pytest.mark.timeout(120)
needs_widgets = pytest.mark.skipif(
    importlib.util.find_spec("ipywidgets") is None, reason="ipywidgets is not installed"
)


@pytest.fixture
def fast_switching():
    """Switch threads every microsecond (the default is 5 ms), so races show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


NOISY = ("\x1b[31mline\x1b[0m " * 20 + "\n") * 100


class BlockingView:
    """A view whose push waits on a gate: a push in progress for as long as a test likes."""

    min_interval = 0.0
    live = False
    final = False
    closed = False

    def __init__(self) -> None:
        self.pushing = threading.Event()
        self.gate = threading.Event()
        self.shown = 0
        self.value = 0

    def push(self) -> int:
        self.pushing.set()
        self.gate.wait(10)
        self.shown = self.value
        return 1


class FakeTask:
    def __init__(self, tid: int) -> None:
        self.id = tid


def test_wait_idle_waits_for_a_push_in_progress() -> None:
    bus = EventBus()
    up = Updater(bus)
    view, task = BlockingView(), FakeTask(1)
    view.gate.set()
    up.watch(view, [task])
    assert up.wait_idle(5)
    view.gate.clear()
    view.pushing.clear()
    view.value = 1
    bus.publish(TaskEvent(EventKind.OUTPUT, task, 1))
    assert view.pushing.wait(5)  # taken off the dirty set, its push not yet over
    try:
        assert up.wait_idle(0.2) is False
        assert up.statistics().dirty == 0  # nothing dirty: only the push in progress held it
    finally:
        view.gate.set()
    assert up.wait_idle(5)
    assert view.shown == view.value
    up.close()


@needs_widgets
def test_card_state_is_final_once_idle(fast_switching: None) -> None:
    """The flaky scenario of ``TestCard.test_card_follows_a_python_task``, many times over."""
    from ttasks_ipy.views import task_card

    ex = Executor(max_workers=4)
    up = Updater(ex.bus)
    bad: list[tuple[int, str, str]] = []
    try:
        rounds, deadline = 0, time.monotonic() + 20
        while rounds < 200 and time.monotonic() < deadline:
            # coloured output makes a render take a millisecond or two: a wide window for a reader
            t = ex.submit(TaskSpec(CallRunner(lambda: print(NOISY)), name=f"r{rounds}"))
            card = task_card(t, up)
            card.min_interval = 0.0  # the final push follows the last event at once, as after a long run
            t.wait(5)
            # call wait_idle at a random moment of the updater's round (jitter, not synchronisation)
            spin_until = time.perf_counter() + random.uniform(0, 0.002)
            while time.perf_counter() < spin_until:
                pass
            assert up.wait_idle(5)
            status, html = card.status, card.html.value
            if status != "succeeded" or 'data-status="succeeded"' not in html:
                bad.append((rounds, status, html[html.find("data-status"):][:30]))
            up.unwatch(card)
            card.close()
            rounds += 1
    finally:
        up.close()
        ex.shutdown()
    assert rounds >= 50, f"only {rounds} rounds ran"
    assert not bad, f"{len(bad)} of {rounds} rounds read a card mid-push: {bad[:3]}"


@needs_widgets
def test_card_status_never_runs_ahead_of_its_html(fast_switching: None) -> None:
    """A reader that sees ``status`` change can rely on the HTML having changed already."""
    from ttasks_ipy.views import task_card

    ex = Executor(max_workers=4)
    up = Updater(ex.bus)
    ahead = 0
    reads = 0
    try:
        for i in range(40):
            gate = threading.Event()
            t = ex.submit(TaskSpec(CallRunner(lambda g=gate: g.wait(5)), name=f"s{i}"))
            card = task_card(t, up)
            gate.set()
            end = time.monotonic() + 5
            while time.monotonic() < end:
                status = card.status
                html = card.html.value
                reads += 1
                if status == "succeeded" and 'data-status="succeeded"' not in html:
                    ahead += 1
                if status == "succeeded":
                    break
            up.unwatch(card)
            card.close()
    finally:
        up.close()
        ex.shutdown()
    assert ahead == 0, f"{ahead} of {reads} reads saw the status before the HTML"
