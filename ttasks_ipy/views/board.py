"""``Dashboard``: every task of a session in one live HTML table.

(The module is not called ``dashboard``: that name is the package's factory function.)

One HTML widget draws the table (the most recent task first, the newest
``rows`` shown plus every active task, older ones folded into one line of
counts); a Text box and a Cancel button below it cancel a task by name,
``#id`` or ``all``. Only the table changes while tasks run, at most twice a
second, so thousands of tasks cost one message per update, not one widget per
row.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import ipywidgets as widgets
from traitlets import Int, Unicode, validate

from ..core import Executor, Task, TaskState
from . import base
from .style import (
    BORDER,
    FIT,
    FONT,
    MONO,
    MUTED,
    STATUS_ORDER,
    SUNKEN,
    SURFACE,
    TEXT,
    badge,
    bar,
    clock,
    colours,
    duration,
    esc,
    shorten,
)

if TYPE_CHECKING:
    from typing import Any

    from .updater import Updater

#: active tasks shown beyond ``rows`` at most (the rest are counted)
MAX_ACTIVE_ROWS = 200


class Dashboard(widgets.VBox):
    """A live table of the tasks of one executor; create it with ``dashboard(executor, updater)``."""

    #: seconds between two updates: at most 2 a second
    min_interval = 0.5

    rows = Int(25, help="How many of the most recent tasks are shown; older ones are folded into counts.")
    notice = Unicode("", help="The outcome of the last Cancel click, shown under the table.")

    @validate("rows")
    def _positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"rows must be >= 1, not {proposal['value']}")
        return proposal["value"]

    def __init__(self, executor: Executor, updater: Updater | None = None, *, rows: int = 25) -> None:
        self._html = base.html_widget("")
        self._target = widgets.Text(
            placeholder="name, #id or all", layout=base.layout("name_box"), style={"description_width": "0"}
        )
        self._button = widgets.Button(
            description="Cancel", tooltip="Cancel the task named in the box", layout=base.layout("button"),
            style=base.cancel_style(), _dom_classes=("ttasks-cancel",),
        )
        controls = widgets.HBox([self._target, self._button], layout=base.layout("row"))
        super().__init__(
            children=(self._html, controls), layout=base.layout("column"), _dom_classes=("ttasks-dashboard",),
            rows=rows,
        )
        self._executor = executor
        self._updater = updater
        self._running = 0
        self._active = 0
        self._button.on_click(self._on_cancel)
        self.push()
        if updater is not None:
            updater.watch(self, None)

    # ---- the View protocol ---------------------------------------------
    @property
    def live(self) -> bool:
        """True while a task runs (its clock ticks)."""
        return self._running > 0

    @property
    def final(self) -> bool:
        """True when no task is active."""
        return self._active == 0

    @property
    def closed(self) -> bool:
        """True once the widget was closed."""
        return base.is_closed(self) or base.is_closed(self._html)

    def push(self) -> int:
        """Render the table; return the messages sent."""
        return base.assign(self._html, value=self.render(self._executor.tasks()))

    # ---- rendering -----------------------------------------------------
    def render(self, tasks: list[Task]) -> str:
        """The table's HTML for ``tasks`` (oldest first, as the executor lists them)."""
        counts: Counter[str] = Counter()
        active: list[Task] = []
        for t in tasks:
            s = t.status
            counts[s] += 1
            if t.state.active:
                active.append(t)
        self._running = counts["running"] + counts["stalled"]
        self._active = len(active)
        recent = tasks[-self.rows:]
        shown_ids = {t.id for t in recent}
        extra = [t for t in active[-MAX_ACTIVE_ROWS:] if t.id not in shown_ids]
        shown = sorted([*recent, *extra], key=lambda t: t.id, reverse=True)
        extra_ids = {t.id for t in extra}
        folded = Counter(t.status for t in tasks[: len(tasks) - len(recent)] if t.id not in extra_ids)
        body = "".join(self._row(t) for t in shown)
        if folded:
            body += self._folded_row(folded)
        if not shown:
            body = f'<tr><td colspan="7" style="padding:10px;color:{MUTED}">no tasks yet</td></tr>'
        head = "".join(
            f'<th style="text-align:left;font-weight:600;padding:6px 8px;border-bottom:1px solid {BORDER}">{h}</th>'
            for h in ("#", "name", "kind", "status", "progress", "time", "what / why")
        )
        notice = (
            f'<div class="ttasks-notice" style="margin-top:6px;font-size:12px;color:{MUTED}">{esc(self.notice)}</div>'
            if self.notice
            else ""
        )
        return (
            FIT
            + f'<div class="ttasks-dashboard-body" data-tasks="{len(tasks)}" style="font-family:{FONT};font-size:13px;'
            f"color:{TEXT};background:{SURFACE};border:1px solid {BORDER};border-radius:8px;padding:10px 12px;"
            f'box-sizing:border-box">{self._summary(len(tasks), counts)}'
            f'<div style="max-height:520px;overflow:auto;margin-top:8px">'
            f'<table style="border-collapse:collapse;width:100%;font-size:12px;line-height:1.4">'
            f'<thead style="background:{SUNKEN}"><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
            f"{notice}</div>"
        )

    def _summary(self, total: int, counts: Counter[str]) -> str:
        parts = [f'<b style="font-size:14px">Tasks</b> <span style="color:{MUTED}">{total:,}</span>']
        for status in STATUS_ORDER:
            n = counts.get(status)
            if n:
                fg, _ = colours(status)
                parts.append(
                    f'<span class="ttasks-count" data-status="{status}" style="color:{fg}">'
                    f'<span style="font-size:10px">●</span> {n:,} {status}</span>'
                )
        return f'<div style="display:flex;flex-wrap:wrap;gap:14px;align-items:baseline">{"".join(parts)}</div>'

    def _row(self, t: Task) -> str:
        status = t.status
        state = t.state
        if state is TaskState.RUNNING:
            when = clock(t.elapsed)
        elif state.terminal and t.started is not None:
            when = duration(t.elapsed)
        else:
            when = ""
        pct = t.progress[0]
        if state is TaskState.RUNNING:
            prog = (
                f'<div style="display:flex;align-items:center;gap:6px;min-width:110px">{bar(pct, status, height=5)}'
                f'<span style="font-variant-numeric:tabular-nums;color:{MUTED}">'
                f'{"" if pct is None else f"{pct:.0f}%"}</span></div>'
            )
        else:
            prog = ""
        if state in (TaskState.FAILED, TaskState.CANCELLED, TaskState.BLOCKED):
            fg, _ = colours(status)
            why = f'<span style="color:{fg}">{esc(shorten(t.error or t.reason or status, 90))}</span>'
        else:
            why = f'<span style="font-family:{MONO};color:{MUTED}">{esc(shorten(t.spec.runner.describe(), 90))}</span>'
        cell = f"padding:5px 8px;border-bottom:1px solid {BORDER};vertical-align:middle;text-align:left"
        name = esc(t.name) if t.name else f'<span style="color:{MUTED}">—</span>'
        return (
            f'<tr class="ttasks-row" data-id="{t.id}" data-status="{esc(status)}">'
            f'<td style="{cell};color:{MUTED};font-variant-numeric:tabular-nums">{t.id}</td>'
            f'<td style="{cell};font-weight:600">{name}</td>'
            f'<td style="{cell};font-family:{MONO};color:{MUTED}">{esc(t.kind)}</td>'
            f'<td style="{cell}">{badge(status)}</td>'
            f'<td style="{cell}">{prog}</td>'
            f'<td style="{cell};font-variant-numeric:tabular-nums;white-space:nowrap">{when}</td>'
            f'<td style="{cell};max-width:420px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap">{why}</td>'
            "</tr>"
        )

    def _folded_row(self, folded: Counter[str]) -> str:
        n = sum(folded.values())
        what = " · ".join(f"{folded[s]:,} {s}" for s in STATUS_ORDER if folded.get(s))
        return (
            f'<tr class="ttasks-folded"><td colspan="7" style="padding:6px 8px;color:{MUTED};font-style:italic">'
            f"… {n:,} older task{'s' if n != 1 else ''} folded: {esc(what)} "
            f"(<code>%bg --list</code> shows them all)</td></tr>"
        )

    # ---- acting (main thread: a click) ---------------------------------
    def _on_cancel(self, _button: widgets.Button) -> None:
        self.cancel(self._target.value)

    def cancel(self, key: str) -> int:
        """Cancel the task named ``key`` (a name, ``#id``, or ``all``); returns how many were cancelled."""
        key = key.strip()
        if not key:
            self.notice = "type a task's name, #id or all, then Cancel"
            n = 0
        elif key == "all":
            n = self._executor.cancel_all()
            self.notice = f"cancelled {n} task{'s' if n != 1 else ''}"
        else:
            task = self._executor.get(key)
            if task is None:
                self.notice = f"no task {key!r}: use a name or #id from the table"
                n = 0
            elif task.cancel():
                self.notice = f"cancelled {task.label}"
                n = 1
            else:
                self.notice = f"{task.label} had already {task.status}"
                n = 0
        if self._updater is not None:
            self._updater.refresh(view=self)
        else:
            self.push()
        return n

    # ---- what a notebook keeps without widgets ---------------------------
    def mimebundle(self, snapshot: bool) -> dict[str, Any]:
        """The dashboard's display: the widget view, and beside it (``snapshot``) the table as it is now as
        text and HTML, else a stable line saying what it is."""
        data = super()._repr_mimebundle_()
        if snapshot:
            from . import text

            tasks = self._executor.tasks()
            data["text/plain"] = text.task_table(tasks)
            data["text/html"] = self.render(tasks)[len(FIT):]
        else:
            data["text/html"] = (
                f'<div class="ttasks-dashboard-body" style="font-family:{FONT};color:{MUTED}">'
                "[bg] dashboard: a live table of every task (shown with a kernel)</div>"
            )
        return data

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # stable when shown; the kernel layer sends snapshots as tasks end
        return self.mimebundle(False)

    def __repr__(self) -> str:
        return "[bg] dashboard"


__all__ = ["Dashboard", "MAX_ACTIVE_ROWS"]
