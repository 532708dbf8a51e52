"""The displays that stand for a task, a graph or the dashboard in the notebook, and their updates.

Each is shown with a display id in the cell that made it. When what it stands
for ends, delivery (on the main thread) replaces it in place, so a notebook
saved afterwards keeps how it ended even where no widget is rendered.

Frontends differ in where they apply a display update. JupyterLab and
Notebook 7 apply ``update_display_data`` only in the output area of the cell
whose request is the message's parent; nbclient (and so a notebook executed
headless and saved) reads only the messages of the cell it is running. So an
update goes out under the parent of the cell that shows the display, and once
more under the running cell's when another cell runs now. While the kernel is
idle the kernel's own parent is that of the last shell message (possibly a
widget's comm message), which is why the display's own cell is named
explicitly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("ttasks_ipy")


@dataclass(frozen=True)
class Shown:
    """One display: what it shows, its handle, and the header of the request of the cell it stands in."""

    obj: Any
    handle: Any
    parent: dict[str, Any]


class OwnDisplays:
    """Displays by key (a task's id, a graph, a dashboard), each updatable in place from the main thread.

    ``cell_running()`` says whether a cell runs now (its parent is then the running cell's).
    """

    def __init__(self, shell: Any, cell_running: Callable[[], bool]) -> None:
        self._pub = getattr(shell, "display_pub", None)
        self._cell_running = cell_running
        self._shown: dict[Any, list[Shown]] = {}

    def show(self, key: Any, obj: Any) -> bool:
        """Display ``obj`` in the running cell with a display id, kept under ``key``; False if it got none."""
        from IPython.display import display

        bundle = getattr(obj, "_repr_mimebundle_", None)
        if callable(bundle):  # ours say all they show: the formatters' dozen lookups are skipped
            data = bundle()
            data, metadata = data if isinstance(data, tuple) else (data, None)
            handle = display(data, raw=True, metadata=metadata, display_id=True)
        else:
            handle = display(obj, display_id=True)
        if handle is None:
            return False
        self._shown.setdefault(key, []).append(Shown(obj, handle, dict(self._parent())))
        return True

    def __contains__(self, key: Any) -> bool:
        return key in self._shown

    def keys(self) -> list[Any]:
        """The keys with displays."""
        return list(self._shown)

    def update(self, key: Any, new: Callable[[Any], Any], *, raw: bool = False) -> int:
        """Replace every display of ``key`` with ``new(what it shows)`` (a mime bundle when ``raw``).

        Returns how many displays were updated.
        """
        shown = self._shown.get(key, ())
        for s in shown:
            try:
                obj = new(s.obj)
                with self._under(s.parent):
                    s.handle.update(obj, raw=raw)
                now = self._parent().get("msg_id")
                if self._cell_running() and now and now != s.parent.get("msg_id"):
                    s.handle.update(obj, raw=raw)  # for frontends that read only the running cell's messages
            except Exception:  # a display that cannot be updated is no reason to fail delivery
                log.debug("display update failed", exc_info=True)
        return len(shown)

    def _parent(self) -> dict[str, Any]:
        header = getattr(self._pub, "parent_header", None)
        return header if isinstance(header, dict) else {}

    @contextmanager
    def _under(self, parent: dict[str, Any]) -> Iterator[None]:
        """Publish from this thread under ``parent`` for the duration (the kernel's own parent is kept)."""
        pub = self._pub
        if not parent or pub is None:
            yield
            return
        set_thread = getattr(pub, "set_thread_parent", None)
        reset_thread = getattr(pub, "reset_thread_parent", None)
        if set_thread is not None and reset_thread is not None:  # ipykernel 7: a context variable
            token = set_thread(parent)
            try:
                yield
            finally:
                reset_thread(token)
            return
        old = getattr(pub, "parent_header", None)
        try:
            pub.parent_header = parent
        except Exception:
            yield
            return
        try:
            yield
        finally:
            pub.parent_header = old


__all__ = ["OwnDisplays", "Shown"]
