"""Keeping a task's output in the task, in the kernel: display(), logging, matplotlib figures.

The engine routes ``sys.stdout``/``sys.stderr`` writes per thread. Here the
kernel-specific rest is routed the same way, for code running on a task's own
thread: ``display()`` calls (kept as rich outputs of the task), ``logging``
handlers created before the extension loaded (they hold the original stream
object), and matplotlib figures (rendered to PNG into the task when its body
ends, and hidden from the inline backend, which would otherwise show them in
whatever cell finishes next). ``install`` and ``uninstall`` mirror each other.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..core import capture

MAX_DISPLAYS = 50


class _Routing:
    def __init__(self, shell: Any, find: Callable[[int], Any]) -> None:
        self.shell = shell
        self.find = find
        self.pub = getattr(shell, "display_pub", None)
        self._orig_publish = None
        self._swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._mpl_patched: tuple[Any, Any, Any] | None = None

    # ---- display() -----------------------------------------------------
    def _publish(self, data: dict[str, Any], metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
        ctx = capture.routed_context()
        if ctx is None:
            return self._orig_publish(data, metadata, *args, **kwargs)  # type: ignore[misc]
        task = self.find(ctx.task_id) if ctx.task_id is not None else None
        if task is not None:
            task.add_display(dict(data), MAX_DISPLAYS)
        text = data.get("text/plain")
        if text and not kwargs.get("update"):
            capture.write("stdout", text + "\n")
        return None

    # ---- logging -------------------------------------------------------
    def _swap_logging_streams(self) -> None:
        originals = {id(getattr(sys.stdout, "_original", None)): sys.stdout,
                     id(getattr(sys.stderr, "_original", None)): sys.stderr}
        for ref in list(logging.Logger.manager.loggerDict.values()) + [logging.getLogger()]:
            for h in getattr(ref, "handlers", []):
                if isinstance(h, logging.StreamHandler) and id(h.stream) in originals:
                    self._swapped.append((h, h.stream))
                    h.setStream(originals[id(h.stream)])

    # ---- matplotlib ----------------------------------------------------
    def _patch_matplotlib(self) -> None:
        if self._mpl_patched is not None or "matplotlib.pyplot" not in sys.modules:
            return
        from matplotlib._pylab_helpers import Gcf

        orig_set = Gcf._set_new_active_manager.__func__  # type: ignore[attr-defined]
        orig_all = Gcf.get_all_fig_managers.__func__  # type: ignore[attr-defined]

        def _set_new_active_manager(cls: Any, manager: Any) -> Any:
            ctx = capture.routed_context()
            if ctx is not None:
                manager._ttasks_owner = ctx
            return orig_set(cls, manager)

        def get_all_fig_managers(cls: Any) -> list[Any]:
            managers = orig_all(cls)
            me = capture.routed_context()
            return [m for m in managers if getattr(m, "_ttasks_owner", None) in (None, me)]

        Gcf._set_new_active_manager = classmethod(_set_new_active_manager)  # type: ignore[method-assign]
        Gcf.get_all_fig_managers = classmethod(get_all_fig_managers)  # type: ignore[method-assign]
        self._mpl_patched = (Gcf, orig_set, orig_all)

    def _unpatch_matplotlib(self) -> None:
        if self._mpl_patched is None:
            return
        Gcf, orig_set, orig_all = self._mpl_patched
        Gcf._set_new_active_manager = classmethod(orig_set)
        Gcf.get_all_fig_managers = classmethod(orig_all)
        self._mpl_patched = None

    @contextlib.contextmanager
    def task_hook(self, ctx: Any) -> Iterator[None]:
        """Around a task body: figures it makes are kept in the task, not shown elsewhere."""
        self._patch_matplotlib()
        try:
            yield
        finally:
            if "matplotlib.pyplot" in sys.modules:
                self._patch_matplotlib()
                _collect_figures(ctx, self.find)

    def install(self) -> None:
        capture.install()
        capture.add_hook(self.task_hook)
        self._swap_logging_streams()
        if self.pub is not None:
            self._orig_publish = self.pub.publish
            self.pub.publish = self._publish

    def uninstall(self) -> None:
        if self.pub is not None and self._orig_publish is not None:
            self.pub.publish = self._orig_publish
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped.clear()
        self._unpatch_matplotlib()
        capture.remove_hook(self.task_hook)
        capture.uninstall()


_lock = threading.Lock()


def _collect_figures(ctx: Any, find: Callable[[int], Any]) -> None:
    from matplotlib._pylab_helpers import Gcf

    mine = [m for m in Gcf.get_all_fig_managers() if getattr(m, "_ttasks_owner", None) is ctx]
    for m in mine:
        buf = io.BytesIO()
        try:
            m.canvas.figure.savefig(buf, format="png", bbox_inches="tight")
            import base64

            task = find(ctx.task_id) if ctx.task_id is not None else None
            if task is not None:
                png = base64.b64encode(buf.getvalue()).decode()
                task.add_display({"image/png": png, "text/plain": f"<Figure {m.num}>"}, MAX_DISPLAYS)
            capture.write("stdout", f"[figure {m.num} captured: h.displays, or %bg --log]\n")
        finally:
            with _lock:
                Gcf.destroy(m)


def install(shell: Any, find: Callable[[int], Any]) -> _Routing:
    """Route ``shell``'s display(), logging and figures per task thread; returns the undo object.

    ``find(task_id)`` is the task a routed thread belongs to.
    """
    r = _Routing(shell, find)
    r.install()
    return r
