"""Loading and unloading the extension: one place that sets up and tears down (they mirror each other)."""
from __future__ import annotations

import re
from typing import Any

from .config import TTasks
from .session import Session

_sessions: dict[int, Session] = {}
_HELP_LINE = re.compile(r"^(\s*)((?:[A-Za-z_][\w.]*\s*=\s*)?)%bg\b(.*\?)\s*$")


def protect_help_lines(lines: list[str]) -> list[str]:
    """Input transformer: keep ``%bg ... ?`` lines away from IPython's help syntax."""
    out = []
    for line in lines:
        m = _HELP_LINE.match(line)
        if m and m.group(3).strip() not in ("?", "??"):  # `%bg?` alone asks IPython for the help
            indent, assign, rest = m.groups()
            line = f"{indent}{assign}get_ipython().run_line_magic('bg', {rest.strip()!r})\n"
        out.append(line)
    return out


_BARE_LINE = re.compile(r"^%bg\b(.*)$")


def quiet_bare_lines(lines: list[str]) -> list[str]:
    """Input transformer (terminal IPython): a bare ``%bg …`` line shows no ``Out[N]:``.

    Its handle is already on screen as the start line; the displayhook would
    print an empty output prompt for it. ``h = %bg …`` still binds the handle.
    """
    if lines and lines[0].startswith("%%"):
        return lines  # a cell magic's body is its own
    out = []
    for line in lines:
        m = _BARE_LINE.match(line.rstrip("\n"))
        if m and not line.rstrip().endswith(("\\", "?")):
            line = f"get_ipython().run_line_magic('bg', {m.group(1).strip()!r}); None\n"
        out.append(line)
    return out


def session(shell: Any = None) -> Session:
    """The session of ``shell`` (the running IPython by default); loads the extension if needed."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise RuntimeError("ttasks_ipy needs a running IPython; use ttasks_ipy.core.Executor in scripts")
    s = _sessions.get(id(shell))
    if s is None:
        load(shell)
        s = _sessions[id(shell)]
    return s


def load(shell: Any) -> None:
    """Register magics, cell hooks, the input transformer and the handle's display."""
    if id(shell) in _sessions:
        return
    from ..core import Task
    from .magics import BgMagics

    config = TTasks(parent=shell)
    s = Session(shell, config)
    _sessions[id(shell)] = s
    shell.configurables.append(config)
    shell.register_magics(BgMagics(shell, s))
    from .graph_magic import magic_for

    shell.register_magic_function(magic_for(s), "cell", "bgraph")
    shell.events.register("pre_run_cell", s.pre_run_cell)
    shell.events.register("post_run_cell", s.post_run_cell)
    shell.input_transformers_cleanup.insert(0, protect_help_lines)
    if getattr(shell, "kernel", None) is None:
        shell.input_transformers_cleanup.append(quiet_bare_lines)
    from ..core.graph import GraphRun

    shell.display_formatter.ipython_display_formatter.for_type(Task, _display_handle)
    shell.display_formatter.ipython_display_formatter.for_type(GraphRun, _display_graph)
    from . import routing

    s.routing = routing.install(shell, s.executor.get)
    s.ledger.refind()  # detached commands of this notebook that outlived an earlier kernel


def unload(shell: Any) -> None:
    """Undo ``load``: cancel and end every task, unregister everything."""
    s = _sessions.pop(id(shell), None)
    if s is None:
        return
    from ..core import Task

    for event, fn in (("pre_run_cell", s.pre_run_cell), ("post_run_cell", s.post_run_cell)):
        try:
            shell.events.unregister(event, fn)
        except ValueError:
            pass
    for transformer in (protect_help_lines, quiet_bare_lines):
        if transformer in shell.input_transformers_cleanup:
            shell.input_transformers_cleanup.remove(transformer)
    from ..core.graph import GraphRun

    shell.display_formatter.ipython_display_formatter.type_printers.pop(Task, None)
    shell.display_formatter.ipython_display_formatter.type_printers.pop(GraphRun, None)
    if s.config in shell.configurables:
        shell.configurables.remove(s.config)
    magics = shell.magics_manager.magics
    for kind in ("line", "cell"):
        for name in ("bg", "bgraph"):
            magics[kind].pop(name, None)
    active = s.executor.active()
    detached = [t for t in active if getattr(t.spec.runner, "detached", False)]
    active = [t for t in active if t not in detached]
    waiting = len(s.inbox)
    s.shutdown()
    if active or waiting or detached:
        said = []
        if active:
            names = ", ".join(t.label for t in active[:8]) + (" …" if len(active) > 8 else "")
            said.append(f"cancelled {len(active)} active task{'s' if len(active) != 1 else ''} ({names})")
        if waiting:
            said.append(f"dropped {waiting} result{'s' if waiting != 1 else ''} not yet delivered")
        if detached:
            said.append(f"left {len(detached)} detached command{'s' if len(detached) != 1 else ''} running "
                        f"({', '.join(t.label for t in detached)}; the next load follows them again)")
        print(f"[bg] unloaded: {'; '.join(said)}")
    routing = getattr(s, "routing", None)
    if routing is not None:
        routing.uninstall()


def _current() -> Session | None:
    from IPython import get_ipython

    return _sessions.get(id(get_ipython()))


def _display_handle(task: Any) -> bool:
    """Display a task handle: nothing if ``%bg`` just showed it in this cell, else its live card or status."""
    from IPython.display import display

    from ..views import text

    s = _current()
    said = s is not None and task.done() and s.said_in_this_cell(task) and not s.widgets()
    if s is not None and (s.shown_in_this_cell(task) or said):
        return True  # on screen in this cell already (its start line or card, or its notice)
    if s is not None and s.widgets():
        s.display_card(task, at_dispatch=False)
        return True
    display(_Plain(text.status_line(task)))
    return True


def _display_graph(graph: Any) -> bool:
    """Display a graph handle: its live graph view, or a status line."""
    from ..views import text

    s = _current()
    if s is None:
        return False
    if graph.done() and s.said_in_this_cell(graph) and not s.widgets():
        return True  # its notice is in this cell already: not said twice
    line = text.graph_notice(graph) if graph.done() else f"[bg] graph {graph.name} {graph.status}"
    s.display_graph(graph, line)
    if graph.done() and not s.widgets():
        s.note_said(graph)  # the cell's end does not say it again
    return True


class _Plain:
    def __init__(self, line: str) -> None:
        self.line = line

    def __repr__(self) -> str:
        return self.line
