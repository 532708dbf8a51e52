"""Views of tasks: live widgets (cards, dashboard, graph view) and plain text.

They only *subscribe* to the engine's events; the engine does not know they
exist. What the kernel layer calls, once per session and per display:

>>> updater = Updater(executor.bus)            # one per session; updater.close() on unload
>>> if widgets_available():
...     display(task_card(task, updater))       # in the dispatching cell, on the main thread
...     display(dashboard(executor, updater))
...     display(graph_view(graph, updater))
>>> updater.refresh(task)                      # after delivery noted what it delivered

Importing this package does not import ipywidgets; the widget modules are
loaded on first use, so terminal IPython pays nothing for them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .facts import NO_FACTS, TaskFacts
from .updater import Updater, UpdaterStats, View

if TYPE_CHECKING:
    from ..core import Executor, Task
    from .board import Dashboard
    from .card import TaskCard
    from .graphview import GraphView


def widgets_available() -> bool:
    """True when live widgets can be shown: ipywidgets 8 imports and this runs in a kernel with comms."""
    try:
        import ipywidgets
    except ImportError:
        return False
    if int(getattr(ipywidgets, "__version__", "0").split(".")[0]) < 8:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def task_card(task: Task, updater: Updater | None = None, *, tail_lines: int = 8,
              facts: TaskFacts = NO_FACTS, at_dispatch: bool = True, live_later: bool = False,
              ask_live: Callable[[TaskCard], None] | None = None) -> TaskCard:
    """A live card for ``task`` (create it on the main thread, then display it).

    ``at_dispatch``: its saved form is its start until ``card.mimebundle(ended=True)`` replaces it.
    ``live_later``: its widgets open with ``card.go_live()`` (a cell's end); until then its display is
    its start as HTML.
    """
    from .card import task_card as make

    return make(task, updater, tail_lines=tail_lines, facts=facts, at_dispatch=at_dispatch,
                live_later=live_later, ask_live=ask_live)


def dashboard(executor: Executor, updater: Updater | None = None, *, rows: int = 25) -> Dashboard:
    """One live table of every task of ``executor``, the most recent first."""
    from .board import Dashboard

    return Dashboard(executor, updater, rows=rows)


def graph_view(graph: Any, updater: Updater | None = None, *, max_nodes: int = 60) -> GraphView:
    """A live picture of a task graph: nodes by dependency level, coloured by status."""
    from .graphview import GraphView

    return GraphView(graph, updater, max_nodes=max_nodes)


__all__ = ["Updater", "UpdaterStats", "View", "dashboard", "graph_view", "task_card", "widgets_available"]
