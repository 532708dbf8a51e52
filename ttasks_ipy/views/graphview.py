"""``GraphView``: a live picture of a task graph, as SVG in one HTML widget.

Nodes are laid out left to right by dependency level (a node's level is one
more than its deepest dependency), ordered within a level by where their
dependencies sit, joined by curved edges, and coloured by status. Finally
tasks have a dashed border, optional ones a dotted one and a tag. The header
says whether the graph is ``ok`` and counts its tasks by status. Past
``max_nodes`` nodes (or a level taller than ``max_rows``) each level is drawn
as one box with its counts instead, so large graphs stay readable and cheap.

It reads the core ``GraphRun``: ``name``, ``nodes`` (``GraphNode``: ``name``,
``deps``, ``finally_``, ``optional``, ``kind``), ``tasks`` (name -> ``Task``,
empty before ``start``), ``status``, ``ok``, ``reason``, ``error``,
``elapsed`` and ``add_done_callback``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from traitlets import Int, validate

from . import base
from .style import (
    BORDER,
    FIT,
    FONT,
    MUTED,
    STATUS_ORDER,
    SUNKEN,
    SURFACE,
    TEXT,
    VERDICT_TEXT,
    badge,
    chip,
    clock,
    colours,
    duration,
    esc,
    shorten,
)

if TYPE_CHECKING:
    from ..core import Task
    from .updater import Updater

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 148, 40, 44, 12, 10
BOX_W, BOX_H = 170, 74


class GraphView(widgets.VBox):
    """The live view of one graph; create it with ``graph_view(graph, updater)`` on the main thread."""

    #: seconds between two updates: at most 4 a second
    min_interval = 0.25

    max_nodes = Int(60, help="Past this many tasks, each level is drawn as one box of counts.")
    max_rows = Int(14, help="Past this many tasks in one level, the graph is summarised too.")

    @validate("max_nodes", "max_rows")
    def _positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"{proposal['trait'].name} must be >= 1, not {proposal['value']}")
        return proposal["value"]

    def __init__(self, graph: Any, updater: Updater | None = None, *, max_nodes: int = 60) -> None:
        self._html = base.html_widget("")
        super().__init__(
            children=(self._html,), layout=base.layout("column"), _dom_classes=("ttasks-graph",),
            max_nodes=max_nodes,
        )
        self._graph = graph
        self._updater: Updater | None = None
        self._levels = _levels(graph.nodes)
        self._watched: set[int] = set()
        self._waiting_done = False
        self.push()
        self._updater = updater
        if updater is not None:
            tasks = list(graph.tasks.values())
            self._watched.update(t.id for t in tasks)
            # before start() there are no tasks to watch: any event may be the start, until they exist
            updater.watch(self, tasks if tasks else None)

    # ---- the View protocol ---------------------------------------------
    @property
    def live(self) -> bool:
        """True until the graph is done: its clocks tick, and tasks made by ``start()`` get watched."""
        return self._graph.status != "done"

    @property
    def final(self) -> bool:
        """True once the graph is done."""
        return self._graph.status == "done"

    @property
    def closed(self) -> bool:
        """True once the widget was closed."""
        return base.is_closed(self) or base.is_closed(self._html)

    def push(self) -> int:
        """Render the graph as it is now; return the messages sent."""
        tasks = dict(self._graph.tasks)
        if self._updater is not None:
            new = [t for t in tasks.values() if t.id not in self._watched]
            if new:
                self._watched.update(t.id for t in new)
                self._updater.watch(self, new)
                self._updater.narrow(self)  # the graph started: its own tasks are enough
            if self._graph.status == "running" and not self._waiting_done:
                # the graph turns done after its last task's event: be told, to show ok
                self._waiting_done = True
                self._graph.add_done_callback(self._on_graph_done)
        return base.assign(self._html, value=self.render(tasks))

    def _on_graph_done(self, _graph: Any) -> None:
        self._waiting_done = False
        if self._updater is not None:
            self._updater.refresh(view=self)

    # ---- rendering -----------------------------------------------------
    def render(self, tasks: dict[str, Task]) -> str:
        """The view's HTML for ``tasks`` (name -> task)."""
        return FIT + self._body(tasks)

    # ---- what a notebook keeps without widgets ---------------------------
    def start_html(self) -> str:
        """The graph as it was started (stable: every task pending, no clock), for saved notebooks."""
        return self._body({}, started=True)

    def end_html(self) -> str:
        """The graph as its run ended, for saved notebooks."""
        return self._body(dict(self._graph.tasks))

    def mimebundle(self, ended: bool) -> dict[str, Any]:
        """The view's display: the widget view with its start as text and HTML beside it, or (``ended``) the
        end of its run as text and HTML alone (an ended run no longer changes; a rerun shows a new view)."""
        if ended:
            from . import text

            return {
                "text/plain": text.graph_notice(self._graph) + "\n" + text.task_table(self._graph.tasks.values()),
                "text/html": f'<div class="ttasks-graph" style="max-width:1100px;margin:2px 0">{self.end_html()}</div>',
            }
        data = super()._repr_mimebundle_()
        data["text/html"] = self.start_html()
        return data

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # its saved form is its start until the kernel layer sends the end of a run
        return self.mimebundle(False)

    def _body(self, tasks: dict[str, Task], started: bool = False) -> str:
        g = self._graph
        nodes = g.nodes
        statuses = {n.name: (tasks[n.name].status if n.name in tasks else "pending") for n in nodes}
        counts = Counter(statuses.values())
        widest = max((len(v) for v in self._levels.values()), default=0)
        if len(nodes) > self.max_nodes or widest > self.max_rows:
            picture = self._summary_svg(statuses)
        else:
            picture = self._full_svg(tasks, statuses)
        gstatus = "started" if started else g.status
        if gstatus == "done":
            verdict = "ok" if g.ok else "not ok"
            word = "succeeded" if g.ok else "failed"
        else:
            verdict, word = gstatus, ("running" if gstatus in ("running", "started") else "pending")
        fg, _ = colours(word)
        when = clock(g.elapsed) if gstatus == "running" else (duration(g.elapsed) if gstatus == "done" else "")
        finished = sum(counts[s] for s in ("succeeded", "failed", "cancelled", "blocked"))
        chips = "".join(
            f'<span class="ttasks-count" data-status="{s}" style="color:{colours(s)[0]}">'
            f'<span style="font-size:10px">●</span> {counts[s]} {s}</span>'
            for s in STATUS_ORDER
            if counts.get(s)
        )
        header = (
            f'<div style="display:flex;align-items:center;gap:8px;flex-wrap:wrap">'
            f'<span style="font-weight:600;font-size:14px">{esc(g.name)}</span>{chip("graph")}'
            f"{badge(verdict, word) if gstatus != 'done' else _verdict(verdict, fg)}"
            f'<span style="color:{MUTED}">{finished}/{len(nodes)} finished</span>'
            f'<span style="display:flex;gap:12px;flex-wrap:wrap;font-size:12px">{chips}</span>'
            f'<span style="flex:1"></span><span style="color:{MUTED};font-variant-numeric:tabular-nums">{when}</span>'
            "</div>"
        )
        footer = ""
        problem = "" if started else (g.error if gstatus == "done" and not g.ok else g.reason)
        if problem:
            footer = (
                f'<div class="ttasks-reason" style="margin-top:6px;font-size:12px;color:{fg}">'
                f"{esc(shorten(problem, 300))}</div>"
            )
        return (
            f'<div class="ttasks-graph-body" data-status="{esc(gstatus)}" data-ok="{str(bool(g.ok)).lower()}" '
            f'style="font-family:{FONT};font-size:13px;color:{TEXT};background:{SURFACE};border:1px solid {BORDER};'
            f'border-left:4px solid {fg};border-radius:8px;padding:10px 12px;box-sizing:border-box">{header}'
            f'<div style="overflow-x:auto;margin-top:8px">{picture}</div>{footer}</div>'
        )

    def _full_svg(self, tasks: dict[str, Task], statuses: dict[str, str]) -> str:
        g = self._graph
        pos = _positions(g.nodes, self._levels)
        cols = len(self._levels)
        rows = 1 + max(((y - PAD) // (NODE_H + ROW_GAP) for _, y in pos.values()), default=-1)
        width = PAD * 2 + cols * NODE_W + max(0, cols - 1) * COL_GAP
        height = PAD * 2 + rows * NODE_H + max(0, rows - 1) * ROW_GAP
        edges, boxes = [], []
        for n in g.nodes:
            x2, y2 = pos[n.name]
            for d in n.deps:
                x1, y1 = pos[d]
                sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
                mid = (sx + ex) / 2
                dash = ' stroke-dasharray="4 3"' if n.finally_ else ""
                edges.append(
                    f'<path d="M{sx:.0f},{sy:.0f} C{mid:.0f},{sy:.0f} {mid:.0f},{ey:.0f} {ex - 4:.0f},{ey:.0f}" '
                    f'fill="none" stroke="#6e7781" stroke-width="1.4"{dash} marker-end="url(#ttasks-arrow)"/>'
                )
        for n in g.nodes:
            x, y = pos[n.name]
            status = statuses[n.name]
            fg, bg = colours(status)
            t = tasks.get(n.name)
            if t is not None and t.state.terminal and t.started is not None:
                sub = f"{status} · {duration(t.elapsed)}"
            elif t is not None and status in ("running", "stalled"):
                sub = f"{status} · {clock(t.elapsed)}"
            else:
                sub = status
            tags = " ".join(w for w, on in (("finally", n.finally_), ("optional", n.optional)) if on)
            tag = (
                f'<text x="{x + NODE_W - 8}" y="{y + 15}" font-size="9.5" text-anchor="end" font-style="italic" '
                f'style="fill:{TEXT}">{tags}</text>'
                if tags
                else ""
            )
            dash = ' stroke-dasharray="2 3"' if n.optional else (' stroke-dasharray="6 3"' if n.finally_ else "")
            sw = 2.5 if status in ("running", "stalled") else 1.5
            title = f"{n.name} ({n.kind}): {status}" + (f" · {t.error}" if t is not None and t.error else "")
            boxes.append(
                f'<g class="ttasks-node" data-name="{esc(n.name)}" data-status="{esc(status)}">'
                f"<title>{esc(title)}</title>"
                f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" style="fill:{bg};stroke:{fg}" '
                f'stroke-width="{sw}"{dash}/>'
                f'<text x="{x + 10}" y="{y + 16}" font-size="12" font-weight="600" style="fill:{TEXT}">'
                f"{esc(shorten(n.name, 10 if tags else 18))}</text>{tag}"
                f'<text x="{x + 10}" y="{y + 31}" font-size="10.5" style="fill:{fg}">{esc(shorten(sub, 25))}</text></g>'
            )
        return _svg(width, height, "".join(edges) + "".join(boxes))

    def _summary_svg(self, statuses: dict[str, str]) -> str:
        levels = self._levels
        cols = len(levels)
        width = PAD * 2 + cols * BOX_W + max(0, cols - 1) * COL_GAP
        height = PAD * 2 + BOX_H
        parts = []
        for lv in range(cols):
            names = levels[lv]
            x, y = PAD + lv * (BOX_W + COL_GAP), PAD
            c = Counter(statuses[n] for n in names)
            if lv:
                parts.append(
                    f'<path d="M{x - COL_GAP},{y + BOX_H / 2} L{x - 4},{y + BOX_H / 2}" stroke="#6e7781" '
                    'stroke-width="1.4" marker-end="url(#ttasks-arrow)"/>'
                )
            parts.append(
                f'<g class="ttasks-level" data-level="{lv}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" '
                f'rx="8" style="fill:{SUNKEN};stroke:{BORDER}"/>'
                f'<text x="{x + 10}" y="{y + 18}" font-size="12" font-weight="600" style="fill:{TEXT}">'
                f"level {lv}</text>"
                f'<text x="{x + BOX_W - 10}" y="{y + 18}" font-size="11" text-anchor="end" style="fill:{MUTED}">'
                f"{len(names):,} tasks</text>"
            )
            bx, bw = x + 10, BOX_W - 20
            for s in STATUS_ORDER:  # a stacked bar of statuses
                n = c.get(s, 0)
                if n:
                    w = bw * n / len(names)
                    fill = colours(s)[0]
                    parts.append(f'<rect x="{bx:.1f}" y="{y + 28}" width="{w:.1f}" height="10" style="fill:{fill}"/>')
                    bx += w
            top = [f"{c[s]} {s}" for s in STATUS_ORDER if c.get(s)][:2]
            for i, line in enumerate(top):
                ty = y + 54 + i * 13
                parts.append(f'<text x="{x + 10}" y="{ty}" font-size="10.5" style="fill:{MUTED}">{line}</text>')
            parts.append("</g>")
        return _svg(width, height, "".join(parts))

    def __repr__(self) -> str:
        return f"[bg] graph {self._graph.name}: {len(self._graph.nodes)} tasks"


def _verdict(verdict: str, fg: str) -> str:
    return (
        f'<span style="display:inline-block;padding:0 8px;border-radius:10px;font-size:11px;font-weight:700;'
        f'line-height:18px;color:{VERDICT_TEXT};background:{fg}">{esc(verdict)}</span>'
    )


def _svg(width: float, height: float, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" style="font-family:{FONT};display:block">'
        '<defs><marker id="ttasks-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" fill="#6e7781"/></marker></defs>'
        f"{body}</svg>"
    )


def _levels(nodes: Sequence[Any]) -> dict[int, list[str]]:
    """Node names by level (0: no dependencies), each level in the order written."""
    level: dict[str, int] = {}
    by_name = {n.name: n for n in nodes}
    for n in nodes:  # iterative depth-first so deep chains need no recursion
        if n.name in level:
            continue
        stack = [n.name]
        while stack:
            name = stack[-1]
            deps = [d for d in by_name[name].deps if d in by_name]
            todo = [d for d in deps if d not in level]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            level[name] = 1 + max((level[d] for d in deps), default=-1)
    out: dict[int, list[str]] = {}
    for n in nodes:
        out.setdefault(level[n.name], []).append(n.name)
    return dict(sorted(out.items()))


def _positions(nodes: Sequence[Any], levels: dict[int, list[str]]) -> dict[str, tuple[int, int]]:
    """Top-left corners; within a level, nodes sit at (or just below) the mean row of their dependencies."""
    deps = {n.name: n.deps for n in nodes}
    row: dict[str, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for lv, names in levels.items():
        wanted = sorted(
            ((sum(row[d] for d in deps[name]) / len(deps[name]) if deps[name] else i, i, name)
             for i, name in enumerate(names)),
        )
        last = -1
        for want, _, name in wanted:
            r = max(round(want), last + 1)
            row[name] = last = r
            pos[name] = (PAD + lv * (NODE_W + COL_GAP), PAD + r * (NODE_H + ROW_GAP))
    return pos


def graph_view(graph: Any, updater: Updater | None = None, *, max_nodes: int = 60) -> GraphView:
    """A live view of ``graph`` kept up to date by ``updater``; call on the main thread, then display it."""
    return GraphView(graph, updater, max_nodes=max_nodes)


__all__ = ["GraphView", "graph_view"]
