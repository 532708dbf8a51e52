"""ttasks_ipy: background tasks for Jupyter and IPython.

``%load_ext ttasks_ipy`` adds ``%bg``. The engine underneath,
``ttasks_ipy.core``, works in plain scripts too.
"""
from __future__ import annotations

from typing import Any

from .core import current_task, progress

__version__ = "0.1.0"


def load_ipython_extension(ip: Any) -> None:
    """Register the magics, delivery and the input transformer on ``ip``."""
    from .kernel.extension import load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """Undo ``load_ipython_extension``: cancel tasks, unregister everything."""
    from .kernel.extension import unload

    unload(ip)


def bg(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in the background of the current session; returns the task."""
    from .kernel.extension import session

    return session().submit_call(fn, args, kwargs)


def task(key: str | int) -> Any:
    """The task of the current session with that name or id (``task('fit').result``, ``task(3)``).

    Raises ``KeyError`` naming the key when there is none.
    """
    from .kernel.extension import session

    found = session().find(str(key))
    if found is None:
        raise KeyError(f"no task {key!r} in this session (see %bg --list)")
    return found


def wait_any(tasks: Any, timeout: float | None = None) -> Any:
    """Block until one of ``tasks`` is done (at most ``timeout`` seconds); returns the done ones."""
    from .kernel.extension import session

    return session().wait(list(tasks), timeout=timeout, return_when="any")


__all__ = ["bg", "current_task", "load_ipython_extension", "progress", "task", "unload_ipython_extension", "wait_any"]
