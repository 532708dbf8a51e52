"""Per-thread output capture: ``sys.stdout``/``sys.stderr`` writes from a task's thread go to that task.

``install()`` puts a router in front of both streams (idempotent, counted);
``route(ctx)`` sends the calling thread's writes to the task's output until
the block ends. Writes from any other thread go where they went before. What
a thread cannot capture: writes to the file descriptors themselves (C code,
``os.system``) and threads the task starts on its own.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

_local = threading.local()
_lock = threading.Lock()
_installed = 0


class _Router:
    """Stands in for a standard stream; writes go to the current thread's task if it has one."""

    def __init__(self, name: str, original: Any) -> None:
        self._name = name
        self._original = original

    def write(self, s: str) -> int:
        target = getattr(_local, "ctx", None)
        if target is None:
            return self._original.write(s)
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        target.output(self._name, s)
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_local, "ctx", None) is None:
            self._original.flush()

    def isatty(self) -> bool:
        return False if getattr(_local, "ctx", None) is not None else self._original.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def install() -> None:
    """Put routers in front of ``sys.stdout`` and ``sys.stderr`` (once; counted)."""
    global _installed
    with _lock:
        _installed += 1
        if _installed == 1:
            sys.stdout = _Router("stdout", sys.stdout)
            sys.stderr = _Router("stderr", sys.stderr)


def uninstall() -> None:
    """Undo one ``install``; the last one restores the streams (if nobody replaced them since)."""
    global _installed
    with _lock:
        _installed = max(0, _installed - 1)
        if _installed == 0:
            for name in ("stdout", "stderr"):
                cur = getattr(sys, name)
                if isinstance(cur, _Router):
                    setattr(sys, name, cur._original)


#: context-manager factories entered around every routed block: ``hook(ctx)``
_hooks: list[Callable[[Any], contextlib.AbstractContextManager[Any]]] = []


def add_hook(hook: Callable[[Any], contextlib.AbstractContextManager[Any]]) -> None:
    """Enter ``hook(ctx)`` around every task body run on a routed thread (e.g. to capture figures)."""
    if hook not in _hooks:
        _hooks.append(hook)


def remove_hook(hook: Callable[[Any], contextlib.AbstractContextManager[Any]]) -> None:
    """Undo ``add_hook``."""
    if hook in _hooks:
        _hooks.remove(hook)


@contextlib.contextmanager
def route(ctx: Any) -> Iterator[None]:
    """Send this thread's standard-stream writes to ``ctx.output`` inside the block (and enter the hooks)."""
    previous = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        with contextlib.ExitStack() as stack:
            for hook in list(_hooks):
                try:
                    stack.enter_context(hook(ctx))
                except Exception:  # a broken hook must not stop the task
                    import logging

                    logging.getLogger("ttasks_ipy").exception("capture hook %r failed", hook)
            yield
    finally:
        _local.ctx = previous


def routed_context() -> Any:
    """The context this thread's writes go to, or None."""
    return getattr(_local, "ctx", None)
