"""Views without a kernel: the terminal tail, the updater's rate bounds, cards, dashboard and graph HTML."""
from __future__ import annotations

import importlib.util
import re
import threading
import time
from typing import Any

import pytest
from helpers import wait_until

from ttasks_ipy.core import BashRunner, CallRunner, EventBus, EventKind, Executor, TaskEvent, TaskSpec, progress
from ttasks_ipy.views import Updater, widgets_available
from ttasks_ipy.views.ansi import lines_html, strip, tail_lines, tqdm_percent

pytestmark = pytest.mark.timeout(60)
needs_widgets = pytest.mark.skipif(
    importlib.util.find_spec("ipywidgets") is None,
    reason="ipywidgets is not installed (it belongs in the project's dependencies)",
)


def texts(pieces: list[tuple[str, str]], n: int = 8) -> list[str]:
    return [line.text for line in tail_lines(pieces, n)]


# ---- the terminal tail -------------------------------------------------------
class TestTail:
    def test_carriage_return_rewrites_in_place(self) -> None:
        assert texts([("stdout", "abcdef\rXY\n")]) == ["XYcdef"]

    def test_progress_line_keeps_only_its_last_state(self) -> None:
        bar = "".join(f"\r{i:3d}%|{'#' * (i // 10):10s}| {i}/100" for i in range(101))
        assert texts([("stderr", bar)]) == ["100%|##########| 100/100"]

    def test_last_lines_only(self) -> None:
        out = "\n".join(str(i) for i in range(100_000)) + "\n"
        assert texts([("stdout", out)], 3) == ["99997", "99998", "99999"]

    def test_backspace_and_erase(self) -> None:
        assert texts([("stdout", "abc\b\bX\n12345\r\x1b[K99\n")]) == ["aXc", "99"]

    def test_stderr_told_apart(self) -> None:
        lines = tail_lines([("stdout", "out\n"), ("stderr", "err\n"), ("stdout", "out again\n")])
        assert [line.stderr for line in lines] == [False, True, False]
        assert 'class="ttasks-stderr"' in lines_html(lines)

    def test_colours_become_styles(self) -> None:
        (line,) = tail_lines([("stdout", "a \x1b[1;31mred\x1b[0m b \x1b[38;5;208morange\x1b[38;2;1;2;3mrgb\n")])
        styles = [(r.text, r.style[0], r.style[2]) for r in line.runs]
        assert styles[1] == ("red", "var(--ttasks-ansi-1,#cf222e)", True)
        assert ("orange", "#ff8700", False) in styles
        assert ("rgb", "#010203", False) in styles
        html = lines_html([line])
        assert "font-weight:700" in html and "\x1b" not in html

    def test_task_text_is_escaped(self) -> None:
        html = lines_html(tail_lines([("stdout", "<script>alert(1)</script>\n"), ("stderr", '<img src=x">')]))
        assert "<script" not in html and "<img" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    def test_bounded_work_on_huge_lines(self) -> None:
        (line,) = tail_lines([("stdout", "x" * 5_000_000)], width=100)
        assert line.cut and len(line.text) == 100

    def test_tqdm_percent(self) -> None:
        lines = tail_lines([("stderr", "\rtrain:  45%|████▌     | 45/100 [00:04<00:05]")])
        assert tqdm_percent(lines) == 45.0
        assert tqdm_percent(tail_lines([("stdout", "loss 45%\n")])) is None

    def test_strip(self) -> None:
        assert strip("\x1b[31mred\x1b[0m\r\x07ok") == "redok"

    def test_other_escapes_dropped(self) -> None:
        assert texts([("stdout", "\x1b]0;title\x07a\x1b[2Ab\x1b=c\n")]) == ["abc"]


# ---- the updater with stand-in views -----------------------------------------
class FakeView:
    """A view that records its pushes; one message each when its value changed."""

    def __init__(self, interval: float = 0.1) -> None:
        self.min_interval = interval
        self.pushes: list[float] = []
        self.value = 0
        self.shown = -1
        self.live = False
        self.final = False
        self.closed = False
        self.on_thread: set[str] = set()

    def push(self) -> int:
        self.on_thread.add(threading.current_thread().name)
        self.pushes.append(time.monotonic())
        if self.value == self.shown:
            return 0
        self.shown = self.value
        return 1


class FakeTask:
    def __init__(self, tid: int) -> None:
        self.id = tid


def flood(bus: EventBus, task: Any, view: FakeView, seconds: float) -> int:
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        view.value += 1
        bus.publish(TaskEvent(EventKind.OUTPUT, task, 1, data={"stream": "stdout", "text": "x\n"}))
        n += 1
    return n


class TestUpdater:
    def test_coalesces_a_flood_to_ten_a_second(self) -> None:
        bus = EventBus()
        up = Updater(bus)
        view, task = FakeView(), FakeTask(1)
        up.watch(view, [task])
        n = flood(bus, task, view, 1.0)
        assert up.wait_idle(2)
        up.close()
        assert n > 10_000
        assert 5 <= len(view.pushes) <= 13
        assert view.shown == view.value  # the latest state was sent
        assert view.on_thread == {"ttasks-updater"}

    def test_global_budget_across_views(self) -> None:
        bus = EventBus()
        up = Updater(bus, budget=50, burst=10)
        views = [FakeView() for _ in range(40)]
        tasks = [FakeTask(i) for i in range(40)]
        for v, t in zip(views, tasks, strict=True):
            up.watch(v, [t])
        assert up.wait_idle(3)
        start = up.statistics().messages
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            for v, t in zip(views, tasks, strict=True):
                v.value += 1
                bus.publish(TaskEvent(EventKind.OUTPUT, t, 1))
            time.sleep(0.001)
        sent = up.statistics().messages - start
        elapsed = time.monotonic() - t0
        up.close()
        assert sent <= 50 * elapsed + 10 + 2, sent
        assert sent >= 50 * elapsed * 0.6
        assert all(v.shown == v.value for v in views), "close() did not flush every final state"

    def test_final_views_go_first(self) -> None:
        bus = EventBus()
        up = Updater(bus, budget=20, burst=1)
        busy = [FakeView() for _ in range(30)]
        for i, v in enumerate(busy):
            up.watch(v, [FakeTask(i)])
        done = FakeView()
        up.watch(done, [FakeTask(99)])
        assert up.wait_idle(5)
        for v in busy:
            v.value += 1
        done.value += 1
        done.final = True
        up.refresh()
        t0 = time.monotonic()
        while done.shown != done.value and time.monotonic() - t0 < 2:
            time.sleep(0.01)
        waited = time.monotonic() - t0
        behind = sum(v.shown != v.value for v in busy)
        up.close()
        assert done.shown == done.value
        assert waited < 0.5 and behind > 20  # it went before the busy ones

    def test_live_views_tick_without_events(self) -> None:
        up = Updater(EventBus(), tick=0.2)
        view = FakeView()
        view.live = True
        up.watch(view, [FakeTask(1)])
        time.sleep(1.0)  # measuring a clock: nothing to await
        up.close()
        assert 4 <= len(view.pushes) <= 8

    def test_idle_updater_does_not_spin(self) -> None:
        up = Updater(EventBus())
        view = FakeView()
        up.watch(view, [FakeTask(1)])
        assert up.wait_idle(2)
        before = len(view.pushes)
        time.sleep(0.5)
        assert len(view.pushes) == before
        up.close()

    def test_closed_views_are_forgotten_and_failures_contained(self) -> None:
        bus = EventBus()
        up = Updater(bus)
        gone, bad = FakeView(), FakeView()
        bad.push = lambda: 1 / 0  # type: ignore[method-assign]
        up.watch(gone, [FakeTask(1)])
        up.watch(bad, [FakeTask(2)])
        gone.closed = True
        up.refresh()
        assert up.wait_idle(2)
        stats = up.statistics()
        up.close()
        assert stats.views == 1 and stats.errors >= 1

    def test_budget_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="budget"):
            Updater(EventBus(), budget=0)


# ---- widgets outside a kernel ------------------------------------------------
@pytest.fixture
def engine() -> Any:
    ex = Executor(max_workers=4)
    up = Updater(ex.bus)
    yield ex, up
    up.close()
    ex.shutdown()


def test_widgets_available_is_false_outside_a_kernel() -> None:
    assert widgets_available() is False


@needs_widgets
class TestCard:
    def test_card_follows_a_python_task(self, engine: Any) -> None:
        from ttasks_ipy.views import task_card

        ex, up = engine
        gate = threading.Event()

        def work() -> int:
            progress(40, "warming up")
            print("hello from the task")
            gate.wait(5)
            return 1

        t = ex.submit(TaskSpec(CallRunner(work), name="work"))
        card = task_card(t, up)
        # the progress and the line come in two events: wait for the card to show both
        wait_until(lambda: card.status == "running" and card.percent == 40 and "hello from the task" in card.html.value,
                   5, "the card shows both")
        assert card.status == "running" and card.percent == 40
        value = card.html.value
        assert "warming up" in value and "hello from the task" in value
        assert card.cancel_button.layout.display != "none"
        gate.set()
        t.wait(5)
        assert up.wait_idle(2)
        assert card.status == "succeeded"
        assert 'data-status="succeeded"' in card.html.value
        assert card.cancel_button.layout.display == "none"
        assert repr(card).startswith("[bg] work")

    def test_tqdm_lines_drive_the_bar(self, engine: Any) -> None:
        from ttasks_ipy.views import task_card

        ex, up = engine
        t = ex.submit(TaskSpec(BashRunner("printf '\\r 10%%|#    | 1/10' >&2; printf '\\r 70%%|###  | 7/10' >&2")))
        card = task_card(t, up)
        t.wait(5)
        assert up.wait_idle(2)
        assert card.percent == 70.0
        assert "100%" in card.html.value  # a succeeded task with a bar ends full

    def test_click_cancels(self, engine: Any) -> None:
        from ttasks_ipy.views import task_card

        ex, up = engine
        t = ex.submit(TaskSpec(BashRunner("sleep 30"), name="long"))
        card = task_card(t, up)
        card.click_cancel()
        t.wait(5)
        assert up.wait_idle(2)
        assert t.status == "cancelled" and card.status == "cancelled"
        assert "⊘ cancelled" in card.html.value

    def test_delivered_names_shown_after_refresh(self, engine: Any) -> None:
        from ttasks_ipy.views import task_card

        ex, up = engine
        t = ex.submit(TaskSpec(BashRunner("true"), name="d"))
        card = task_card(t, up)
        t.wait(5)
        t.note_delivered(("x", "<y>"))
        up.refresh(t)
        assert up.wait_idle(2)
        assert "delivered" in card.html.value and "&lt;y&gt;" in card.html.value

    def test_widget_models_per_card(self, engine: Any) -> None:
        import ipywidgets

        from ttasks_ipy.views import base, task_card

        ex, up = engine
        task_card(ex.submit(TaskSpec(BashRunner("true"))), up)  # shared layouts and styles exist from now on
        base.layout("cancel"), base.layout("hidden")  # the button's, whether its task runs or ended by then
        opened: list[str] = []
        original = ipywidgets.Widget.open

        def count(self: Any) -> None:
            opened.append(type(self).__name__)
            original(self)

        ipywidgets.Widget.open = count  # type: ignore[method-assign]
        try:
            task_card(ex.submit(TaskSpec(BashRunner("true"))), up)
            assert sorted(opened) == ["Button", "HTML", "TaskCard"]
            opened.clear()
            quick = ex.submit(TaskSpec(BashRunner("true")))
            quick.wait(5)
            done = task_card(quick, up, live_later=True)
            assert not done.go_live()  # its task ended: no widget, ever
            assert done.mimebundle(ended=False).keys() == {"text/plain", "text/html"}  # its start as HTML
            gate = threading.Event()
            slow = ex.submit(TaskSpec(CallRunner(lambda: gate.wait(10)), name="slow"))
            card = task_card(slow, up, live_later=True)
            assert opened == [] and not card.closed  # nothing opens at first
            assert "application/vnd.jupyter.widget-view+json" not in card.mimebundle(ended=False)
            assert repr(card).startswith("[bg] slow")
            assert card.go_live() and not card.go_live()
            assert opened == ["_LateHTML", "Button", "TaskCard"]  # the row opens with both children in their state
            assert card.children == (card.html, card.cancel_button)
            view = card.mimebundle(ended=False)["application/vnd.jupyter.widget-view+json"]
            assert view["model_id"] == card.model_id
            assert "slow" in card.html.value
            assert card.cancel_button.layout.display != "none"
            gate.set()
            slow.wait(5)
            assert up.wait_idle(2)
        finally:
            ipywidgets.Widget.open = original  # type: ignore[method-assign]
        assert card.cancel_button.layout.display == "none"
        assert len(done.children) == 1 and opened.count("Button") == 1 and done.closed


@needs_widgets
class TestDashboard:
    def test_thousands_of_tasks_stay_light(self, engine: Any) -> None:
        from ttasks_ipy.views import dashboard

        ex, up = engine
        for _ in range(2000):
            ex.submit(TaskSpec(CallRunner(int)))
        slow = ex.submit(TaskSpec(BashRunner("sleep 30"), name="slow"))
        board = dashboard(ex, up, rows=20)
        ex.wait(ex.tasks()[:-1], timeout=30)
        t0 = time.perf_counter()
        board.push()
        render = time.perf_counter() - t0
        value = board._html.value
        assert render < 0.2
        assert value.count('class="ttasks-row"') == 20
        assert "older tasks folded" in value
        assert 'data-id="2001"' in value  # the newest first
        assert board.cancel("slow") == 1
        assert board.cancel("nosuch") == 0 and "no task" in board.notice
        slow.wait(5)
        assert len(value) < 60_000

    def test_cancel_all_and_plain_text(self, engine: Any) -> None:
        from ttasks_ipy.views import dashboard

        ex, up = engine
        ex.submit(TaskSpec(BashRunner("sleep 30")))
        board = dashboard(ex, up)
        assert board.cancel("all") == 1
        assert repr(board) == "[bg] dashboard"


@needs_widgets
class TestGraphView:
    def _graph(self, ex: Executor, fail: bool) -> Any:
        from ttasks_ipy.core.graph import GraphNode, GraphRun

        nodes = [
            GraphNode("build", BashRunner("true")),
            GraphNode("lint", BashRunner("true")),
            GraphNode("test", BashRunner("exit 1" if fail else "true"), deps=("build",)),
            GraphNode("report", BashRunner("true"), deps=("lint", "test"), finally_=True),
            GraphNode("advice", BashRunner("exit 3"), deps=("report",), finally_=True, optional=True),
            GraphNode("deploy", BashRunner("true"), deps=("test",)),
        ]
        return GraphRun(ex, "pipeline", nodes)

    def test_nodes_coloured_by_status_and_ok(self, engine: Any) -> None:
        pytest.importorskip("ttasks_ipy.core.graph")
        from ttasks_ipy.views import graph_view

        ex, up = engine
        g = self._graph(ex, fail=True)
        view = graph_view(g, up)
        assert 'data-status="pending"' in view._html.value
        assert up.wait_idle(2)  # the updater saw the view before the graph had tasks
        time.sleep(0.1)
        g.start()
        g.wait(10)
        assert up.wait_idle(3)
        value = view._html.value
        nodes = dict(re.findall(r'data-name="(\w+)" data-status="(\w+)"', value))
        assert nodes == {
            "build": "succeeded", "lint": "succeeded", "test": "failed", "report": "succeeded",
            "advice": "failed", "deploy": "blocked",
        }
        assert 'data-ok="false"' in value and "not ok" in value
        assert 'stroke-dasharray="2 3"' in value  # optional marked
        assert repr(view) == "[bg] graph pipeline: 6 tasks"

    def test_ok_graph_turns_ok(self, engine: Any) -> None:
        pytest.importorskip("ttasks_ipy.core.graph")
        from ttasks_ipy.views import graph_view

        ex, up = engine
        g = self._graph(ex, fail=False)
        view = graph_view(g, up)
        g.start()
        g.wait(10)
        deadline = time.monotonic() + 3
        while 'data-ok="true"' not in view._html.value and time.monotonic() < deadline:
            up.wait_idle(1)
            time.sleep(0.02)
        assert 'data-ok="true"' in view._html.value

    def test_large_graph_is_summarised(self, engine: Any) -> None:
        pytest.importorskip("ttasks_ipy.core.graph")
        from ttasks_ipy.core.graph import GraphNode, GraphRun
        from ttasks_ipy.views import graph_view

        ex, up = engine
        nodes = [GraphNode(f"n{i}", CallRunner(int), deps=((f"n{i - 1}",) if i % 10 else ())) for i in range(1000)]
        g = GraphRun(ex, "big", nodes)
        view = graph_view(g, up)
        g.start()
        g.wait(60)
        assert up.wait_idle(3)
        value = view._html.value
        assert value.count('class="ttasks-level"') == 10
        assert "ttasks-node" not in value
        assert len(value) < 20_000


def _contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two ``#rrggbb`` colours."""

    def lum(c: str) -> float:
        rgb = [int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _tint(top: str, alpha: float, bottom: str) -> str:
    t, b = ([int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in (top, bottom))
    return "#" + "".join(f"{round(x * alpha + y * (1 - alpha)):02x}" for x, y in zip(t, b, strict=True))


#: JupyterLab 4's theme colours the views stand on: a card (--jp-layout-color1), a bar's track
#: (--jp-layout-color2), an output tail (--jp-cell-editor-background)
THEMES = {
    "light": {"card": "#ffffff", "track": "#eeeeee", "tail": "#f5f5f5"},
    "dark": {"card": "#212121", "track": "#424242", "tail": "#212121"},
}


@pytest.mark.parametrize("theme", list(THEMES))
def test_every_colour_is_legible_on_the_theme(theme: str) -> None:
    """WCAG AA: text 4.5:1 (status words on the card and in their pill, ANSI and stderr text in a tail,
    a verdict on its colour), status marks 3:1 (a card's edge, a progress bar on its track)."""
    from ttasks_ipy.views import style

    bg = THEMES[theme]
    statuses = style.STATUS_COLOURS if theme == "light" else style.DARK_STATUS_COLOURS
    ansi = style.ANSI_LIGHT if theme == "light" else style.ANSI_DARK
    stderr, mark = style.STDERR_LIGHT if theme == "light" else style.STDERR_DARK
    on_strong = style.ON_STRONG[0 if theme == "light" else 1]
    low = []
    for status, (fg, pill) in statuses.items():
        for what, other, need in (("card", bg["card"], 4.5), ("pill", pill, 4.5), ("track", bg["track"], 3.0),
                                  ("verdict", on_strong, 4.5)):
            if _contrast(fg, other) < need:
                low.append(f"{status} on {what}: {_contrast(fg, other):.2f}")
    for n, colour in enumerate(ansi):
        if _contrast(colour, bg["tail"]) < 4.5:
            low.append(f"ANSI {n} in a tail: {_contrast(colour, bg['tail']):.2f}")
    tinted = _tint("#e5534b", 0.09, bg["tail"])  # a stderr line's background
    if _contrast(stderr, tinted) < 4.5 or _contrast(mark, tinted) < 3.0:
        low.append(f"stderr: {_contrast(stderr, tinted):.2f}, its mark {_contrast(mark, tinted):.2f}")
    assert not low, low
    assert set(statuses) == set(style.STATUS_COLOURS)
    # the dark palette is what the theme rule sets
    for status, (fg, pill) in style.DARK_STATUS_COLOURS.items():
        assert f"--ttasks-{status}-fg:{fg}" in style.THEME and f"--ttasks-{status}-bg:{pill}" in style.THEME
