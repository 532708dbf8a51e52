"""``TaskCard``: the live widget of one task.

Three widget models: a row (``HBox``) holding one ``HTML`` widget that draws
the whole card (name, kind, status badge, clock, progress bar, output tail,
reason) and a Cancel ``Button`` laid over its top-right corner. A card made
with ``live_later`` opens no widget at all: its display is its start as HTML
(what a saved notebook keeps anyway) until ``go_live()`` opens the three
models, each with its state, and the caller shows the card again (its display
now the row's view). The magics call it once the dispatching cell has been
answered (the kernel's next idle moment), for a task that still runs then, or
earlier when the card asks (``ask_live``, from the updater's thread) because
its task has run for ``LIVE_AFTER`` seconds in a cell that still runs. A cell
whose task ended within it sends no comm message at all: its card's ended form
replaces the start at once, and a Cancel button is of use only once the kernel
is free to handle its click, after the cell. While the task runs only the HTML
changes, one message per update; when it ends, the HTML and the button
(hidden) change once more. The card is rendered where it is created or opened
and from then on only by the ``Updater``.

Progress comes from ``ctx.progress()`` (PROGRESS events) or, when the task
never reports any, from the last tqdm-style line of its output.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from traitlets import Float, Int, Unicode, validate

from ..core import Task, TaskState
from . import ansi, base
from . import text as text_view
from .facts import NO_FACTS, TaskFacts
from .style import (
    BORDER,
    CODE_BG,
    FIT,
    FONT,
    MONO,
    MUTED,
    SURFACE,
    TEXT,
    THEME,
    badge,
    bar,
    chip,
    clock,
    colours,
    duration,
    esc,
    shorten,
)

if TYPE_CHECKING:
    from .updater import Updater


#: seconds after which a ``live_later`` card of a running task asks to go live (its cell still runs)
LIVE_AFTER = 0.5


class TaskCard(widgets.HBox):
    """The live card of one task; create it on the main thread with ``task_card(task, updater)``."""

    #: seconds between two updates: at most 10 a second
    min_interval = 0.1

    tail_lines = Int(8, help="How many of the last output lines the card shows (0 hides the output).")
    tail_chars = Int(16_384, help="How many characters of the output tail are read to find those lines.")
    status = Unicode("", help="The status the card shows now (read only; not synced).")
    percent = Float(None, allow_none=True, help="The progress the bar shows, 0-100, or None (read only).")

    @validate("tail_lines", "tail_chars")
    def _non_negative(self, proposal: Any) -> int:
        value = proposal["value"]
        if value < 0:
            raise ValueError(f"{proposal['trait'].name} must be >= 0, not {value}")
        return value

    @validate("percent")
    def _clamp(self, proposal: Any) -> float | None:
        value = proposal["value"]
        return None if value is None else min(100.0, max(0.0, float(value)))

    def __init__(self, task: Task, updater: Updater | None = None, *, tail_lines: int = 8,
                 facts: TaskFacts = NO_FACTS, at_dispatch: bool = True, live_later: bool = False,
                 ask_live: Callable[[TaskCard], None] | None = None) -> None:
        self._facts = facts
        self._at_dispatch = at_dispatch
        self._task_ref = weakref.ref(task)
        self._plain = _plain_line(task, facts)
        self._describe = shorten(task.spec.runner.describe(), 160)
        self._tqdm: float | None = None
        self._ever_percent = False
        self.tail_lines = tail_lines  # not synced: no message (the widget is not open yet)
        # drawn before the widgets open, so each opens with its state: no update right after
        status, percent, value = self._draw(task)
        self._button_lock = threading.Lock()
        self._button_shown = False
        #: False until the card's widgets are open (a ``live_later`` card: ``go_live``)
        self._live = not live_later
        self._ask_live = ask_live
        self._made = time.monotonic()
        self._html = base.html_widget(value, "card_html", late=live_later)
        self._button: widgets.Button | None = None if live_later else self._new_button(task)
        super().__init__(
            children=(self._html,) if self._button is None else (self._html, self._button),
            layout=base.layout("card"),
            _dom_classes=("ttasks-card",),
        )
        self.percent = percent
        self.status = status
        if updater is not None:
            updater.watch(self, [task])

    # ---- the View protocol (for the Updater) ---------------------------
    @property
    def task(self) -> Task | None:
        """The task, while it is kept somewhere."""
        return self._task_ref()

    @property
    def live(self) -> bool:
        """True while the task runs (its clock ticks)."""
        task = self._task_ref()
        return task is not None and task.state is TaskState.RUNNING

    @property
    def final(self) -> bool:
        """True once the task has finished."""
        task = self._task_ref()
        return task is None or task.state.terminal

    def open(self) -> None:
        """Open the row's comm, unless the card goes live later (a ``live_later`` card)."""
        if self._live:
            super().open()

    @property
    def closed(self) -> bool:
        """True once the widget was closed (or, not live yet, once its task ended: it never will be)."""
        if not self._live:
            task = self._task_ref()
            return task is None or task.state.terminal
        return base.is_closed(self) or base.is_closed(self._html)

    def push(self) -> int:
        """Render the task's latest state; return the messages sent (0 when nothing changed).

        The order is one a reader can rely on: the HTML and the button change
        first, ``percent`` and ``status`` last, all from one reading of the task.
        So once ``status`` says a state, the HTML shows that state (or a later one).
        """
        task = self._task_ref()
        if task is None:
            return 0
        if not self._live:  # its widgets open with the state of their time; asked for once the task has run a while
            ask = self._ask_live
            if ask is not None and task.state.active and time.monotonic() - self._made >= LIVE_AFTER:
                ask(self)
            return 0
        status, percent, value = self._draw(task)
        sent = base.assign(self._html, value=value)
        show = task.state.active
        with self._button_lock:
            button = self._button
            if button is not None and show != self._button_shown:
                self._button_shown = show
                sent += base.assign(button, layout=base.layout("cancel" if show else "hidden"))
        self.percent = percent
        self.status = status
        return sent

    # ---- rendering -----------------------------------------------------
    def render(self, task: Task) -> str:
        """The card's HTML for the task as it is now (what the card shows is not changed)."""
        return self._draw(task)[2]

    def _draw(self, task: Task) -> tuple[str, float | None, str]:
        """``(status, percent, html)`` from one reading of the task's status."""
        status, percent, inner = self._parts(task)
        return status, percent, FIT + self._body(task, status, percent, inner)

    def _parts(self, task: Task) -> tuple[str, float | None, str]:
        """``(status, percent, the card's inner HTML)`` from one reading of the task's status."""
        status = task.status
        active = task.state.active
        lines = self._lines(task)
        percent = self._percent(task, lines)
        parts = [self._header(task, status, active), self._progress(task, status, percent)]
        if lines:
            parts.append(
                f'<div class="ttasks-tail" style="margin-top:8px;padding:6px 0;border-radius:6px;'
                f"background:{CODE_BG};border:1px solid {BORDER};font-family:{MONO};font-size:12px;"
                f'line-height:1.45;white-space:pre;overflow-x:auto;color:{TEXT}">{ansi.lines_html(lines)}</div>'
            )
        parts.append(self._footer(task, status))
        return status, percent, "".join(parts)

    def _body(self, task: Task, status: str, percent: float | None, inner: str, colour_of: str | None = None) -> str:
        fg, _ = colours(colour_of or status)
        return (
            f'<div class="ttasks-card-body" data-status="{esc(status)}" data-task="{esc(task.label)}" '
            f'data-percent="{"" if percent is None else f"{percent:.1f}"}" '
            f"style=\"box-sizing:border-box;font-family:{FONT};font-size:13px;line-height:1.4;color:{TEXT};"
            f"background:{SURFACE};border:1px solid {BORDER};border-left:4px solid {fg};border-radius:8px;"
            f'padding:10px 14px 10px 12px;box-shadow:0 1px 2px rgba(31,35,40,.06)">{inner}</div>'
        )

    def _header(self, task: Task, status: str, active: bool, *, word: str | None = None) -> str:
        """The top line; ``word``: the start word shown instead of the status, with no clock (a start form)."""
        out = self._facts.out
        name = esc(task.label) + (f' <span style="color:{MUTED};font-weight:400">→ {esc(out)}</span>' if out else "")
        if word is not None:
            when = ""
        elif task.state is TaskState.RUNNING:
            when = clock(task.elapsed)
        elif task.state.terminal and task.started is not None:
            when = duration(task.elapsed)
        else:
            when = ""
        return (
            f'<div style="display:flex;align-items:center;gap:8px;min-height:28px;'
            f'padding-right:{92 if active else 0}px">'
            f'<span style="font-weight:600;font-size:14px;white-space:nowrap">{name}</span>'
            f"{chip(task.kind)}{badge(word or status, status)}"
            f'<span title="{esc(self._describe)}" style="flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;'
            f'white-space:nowrap;color:{MUTED};font-family:{MONO};font-size:12px">{esc(self._describe)}</span>'
            f'<span class="ttasks-clock" style="font-variant-numeric:tabular-nums;color:{MUTED};'
            f'white-space:nowrap">{esc(when)}</span></div>'
        )

    def _progress(self, task: Task, status: str, percent: float | None) -> str:
        state = task.state
        if state is TaskState.RUNNING:
            shown = percent
        elif state is TaskState.SUCCEEDED and self._ever_percent:
            shown = 100.0
        elif state.terminal and percent is not None:
            shown = percent
        else:
            return ""
        message = task.progress[1]
        label = "" if shown is None else f"{shown:.0f}%"
        return (
            f'<div style="display:flex;align-items:center;gap:10px;margin-top:6px">{bar(shown, status)}'
            f'<span style="min-width:36px;text-align:right;font-variant-numeric:tabular-nums;font-size:12px;'
            f'color:{MUTED}">{label}</span>'
            + (
                f'<span style="max-width:40%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;'
                f'font-size:12px;color:{MUTED}">{esc(message)}</span>'
                if message
                else ""
            )
            + "</div>"
        )

    def _footer(self, task: Task, status: str) -> str:
        fg, _ = colours(status)
        bits = []
        state = task.state
        if state is TaskState.SUCCEEDED:
            bits.append(f'<span style="color:{fg}">✓ finished in {esc(duration(task.elapsed))}</span>')
        elif state is TaskState.FAILED:
            bits.append(f'<span style="color:{fg}">✗ {esc(shorten(task.error or task.reason or "failed", 300))}</span>')
        elif state is TaskState.CANCELLED:
            bits.append(f'<span style="color:{fg}">⊘ {esc(task.reason or "cancelled")}</span>')
        elif state is TaskState.BLOCKED:
            by = ", ".join(task.blocked_by)
            bits.append(f'<span style="color:{fg}">⊘ {esc(task.reason or f"blocked by {by}")}</span>')
        elif task.stalled and state is TaskState.RUNNING:
            bits.append(f'<span style="color:{fg}">no output for a while: stalled</span>')
        if task.spec.retries and task.attempt:
            bits.append(f"attempt {task.attempt} of {task.spec.retries + 1}")
        where = _cluster_where(task)
        if where:
            bits.append(where)
        if state is TaskState.QUEUED and task.attempt and task.reason:
            bits.append(f"retrying after: {esc(shorten(task.reason, 120))}")
        if task.ready_line is not None:
            ready = esc(shorten(ansi.strip(task.ready_line), 120))
            bits.append(f'ready: <span style="font-family:{MONO}">{ready}</span>')
        delivered = task.delivered
        if delivered:
            names = ", ".join(f'<b style="font-family:{MONO}">{esc(n)}</b>' for n in delivered)
            bits.append(f"delivered {names}")
        if not bits:
            return ""
        sep = f'<span style="color:{MUTED}"> · </span>'
        return f'<div class="ttasks-reason" style="margin-top:8px;font-size:12px;color:{MUTED}">{sep.join(bits)}</div>'

    def _lines(self, task: Task) -> list[ansi.Line]:
        if self.tail_lines == 0:
            return []
        pieces = task.output_buffer.tail_mixed()
        if not pieces:
            return []
        return ansi.tail_lines(pieces, self.tail_lines, max_chars=self.tail_chars)

    def _percent(self, task: Task, lines: list[ansi.Line]) -> float | None:
        reported = task.progress[0]
        if reported is not None:
            self._ever_percent = True
            return reported
        found = ansi.tqdm_percent(lines)
        if found is not None:
            self._tqdm = found
            self._ever_percent = True
        return self._tqdm

    # ---- what a notebook keeps without widgets ---------------------------
    def start_html(self, task: Task) -> str:
        """The card as it was dispatched (stable: no clock, no output), for saved notebooks."""
        word = "queued" if task.state is TaskState.QUEUED and self._facts.queued_at_start else "started"
        status = "queued" if word == "queued" else "running"
        return self._body(task, word, None, self._header(task, status, False, word=word), status)

    def end_html(self, task: Task) -> str:
        """The card as it ended (its last output lines, how it ended, what it delivered), for saved notebooks."""
        status, percent, inner = self._parts(task)
        return self._body(task, status, percent, inner)

    def mimebundle(self, ended: bool) -> dict[str, Any]:
        """The card's display: the widget view with its start as text and HTML beside it, or (``ended``) its
        end as text and HTML alone.

        An ended card no longer changes, so its display becomes the HTML it shows: the same picture with
        or without a kernel, with or without saved widget state, in every frontend and on GitHub.
        """
        task = self._task_ref()
        if task is None:
            return super()._repr_mimebundle_()
        if ended:
            tail = [ansi.strip(line.text) for line in self._lines(task)]
            html = f'{THEME}<div class="ttasks-card" style="max-width:900px;margin:2px 0">{self.end_html(task)}</div>'
            return {"text/plain": text_view.end_text(task, self._facts, tail), "text/html": html}
        if not self._live:  # its start as HTML until its widgets open
            return {"text/plain": self._plain, "text/html": self.start_html(task)}
        data = super()._repr_mimebundle_()
        data["text/html"] = self.start_html(task)
        return data

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        task = self._task_ref()
        # shown where it was dispatched, the card's saved form is its start until the kernel sends its end
        # (stable outputs); shown later, a finished task's card is saved as it ended
        return self.mimebundle(not self._at_dispatch and task is not None and task.state.terminal)

    # ---- acting --------------------------------------------------------
    def _on_cancel(self, _button: widgets.Button) -> None:
        task = self._task_ref()
        if task is not None:
            task.cancel()

    def click_cancel(self) -> None:
        """Do what a click on Cancel does (for tests and keyboard users)."""
        self.cancel_button.click()

    @property
    def cancel_button(self) -> widgets.Button:
        """The Cancel button (the card goes live now if it was not yet)."""
        task = self._task_ref()
        self._open(task)
        assert self._button is not None
        return self._button

    def go_live(self) -> bool:
        """Open a ``live_later`` card's widgets if its task is still active.

        True if they opened now: the card must then be shown again, its display the row's view.
        """
        task = self._task_ref()
        if self._live or task is None or not task.state.active:
            return False
        return self._open(task)

    def _new_button(self, task: Task | None) -> widgets.Button:
        show = task is not None and task.state.active
        label = task.label if task is not None else "?"
        button = widgets.Button(
            description="Cancel",
            tooltip=f"Cancel task {label} (handled once the kernel is free: after a running cell ends)",
            layout=base.layout("cancel" if show else "hidden"),
            style=base.cancel_style(), _dom_classes=("ttasks-cancel",),
        )
        button.on_click(self._on_cancel)
        self._button_shown = show
        return button

    def _open(self, task: Task | None) -> bool:
        """Open the HTML, the button and the row around both, each with its state now, once; True if now."""
        with self._button_lock:
            if self._live:
                return False
            if task is not None:
                status, percent, value = self._draw(task)
                self._html.value = value  # (no comm yet: no message)
                self.percent, self.status = percent, status
            base.open_late(self._html)
            self._button = self._new_button(task)
            self.children = (self._html, self._button)
            super().open()
            self._live = True  # last: the updater pushes only to a card whose comms are all open
            return True

    @property
    def html(self) -> widgets.HTML:
        """The HTML widget that draws the card."""
        return self._html

    # ---- stable plain text ---------------------------------------------
    def __repr__(self) -> str:
        return self._plain


def _cluster_where(task: Task) -> str:
    """For a task on a cluster: the worker it runs on, and a link to the cluster's dashboard if it has one."""
    where = task.where
    if not where or task.spec.backend != "dask":
        return ""
    worker, _, link = where.partition(" · dashboard ")
    html = f'on <span style="font-family:{MONO}">{esc(worker)}</span>'
    if link.startswith(("http://", "https://")):
        html += f' · <a href="{esc(link)}" target="_blank" rel="noopener" style="color:inherit">Dask dashboard</a>'
    return html


def _plain_line(task: Task, facts: TaskFacts = NO_FACTS) -> str:
    """The stable ``text/plain`` of a card: the text view's start line when there is one."""
    try:
        from . import text

        return text.start_line(task, facts)
    except Exception:  # the text views belong to the kernel layer; never fail a card for them
        return f"[bg] {task.label} ({task.kind}): {shorten(task.spec.runner.describe(), 60)}"


def task_card(task: Task, updater: Updater | None = None, *, tail_lines: int = 8,
              facts: TaskFacts = NO_FACTS, at_dispatch: bool = True, live_later: bool = False,
              ask_live: Callable[[TaskCard], None] | None = None) -> TaskCard:
    """A live card for ``task``, kept up to date by ``updater``; call on the main thread, then display it.

    ``at_dispatch``: shown by the magic that dispatched the task, so its saved form is its start
    until the kernel layer sends ``mimebundle(ended=True)`` (else a finished task is saved as it ended).
    ``live_later``: no widget opens until ``go_live()`` (the end of the dispatching cell); until then
    the card's display is its start as HTML. ``ask_live(card)`` is called from the updater's thread
    when such a card's task has run for ``LIVE_AFTER`` seconds and the card is not live yet (a long
    cell dispatched it): the caller may open it then.
    """
    return TaskCard(task, updater, tail_lines=tail_lines, facts=facts, at_dispatch=at_dispatch,
                    live_later=live_later, ask_live=ask_live)


__all__ = ["TaskCard", "task_card"]
