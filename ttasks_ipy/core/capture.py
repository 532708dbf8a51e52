"""Per-thread output capture: ``sys.stdout``/``sys.stderr`` writes from a task's thread go to that task.

``install()`` puts a router in front of both streams (idempotent, counted per
thread: a thread's nested installs cost no lock, so a pool thread that holds
one for its life makes its tasks' own installs free);
``route(ctx)`` sends the calling thread's writes to the task's output until
the block ends. Writes from any other thread go where they went before. What
a thread cannot capture: writes to the file descriptors themselves (C code,
``os.system``) and threads the task starts on its own.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any


class _ThreadState(threading.local):
    """This thread's routing: its task's context (None outside a routed block), the sink made by its
    first write, its install depth."""

    ctx: Any = None
    sink: Any = None
    depth = 0


_local = _ThreadState()
_lock = threading.Lock()
_installed = 0
#: every router ever put in place, kept alive for good. ``print()`` before CPython 3.13 holds
#: ``sys.stdout`` as a borrowed reference while it writes, so a router dropped by ``uninstall``
#: on one thread while another thread prints through it was freed under that print and
#: crashed the interpreter (python/cpython#130163). One router per original stream, reused.
_kept: dict[tuple[str, int], _Router] = {}


class _Router:
    """Stands in for a standard stream; writes go to the current thread's task if it has one."""

    def __init__(self, name: str, original: Any) -> None:
        self._name = name
        self._original = original
        #: something was written to the original stream since its last flush
        self._dirty = True

    def write(self, s: str) -> int:
        sink = _local.sink
        if sink is None:
            ctx = _local.ctx
            if ctx is None:
                self._dirty = True
                return self._original.write(s)
            sink = _local.sink = _Coalescer(ctx)  # the block's first write: its sink is made now
        if s.__class__ is not str and not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        # the hot path of a printing task, inlined: one append, no lock, one test (see _Coalescer)
        if sink.stream is not self._name:
            sink.switch(self._name)
        sink.parts.append(s)
        n = len(s)
        size = sink.size = sink.size + n
        if size >= sink.limit:
            sink.limit_reached()
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        # a flush of a kernel's stream waits for its I/O thread (about a millisecond, twice per
        # display()): skip it when nothing was written through this stream since the last one
        if _local.ctx is None and self._dirty:
            self._dirty = False
            self._original.flush()

    def isatty(self) -> bool:
        return False if _local.ctx is not None else self._original.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def install() -> None:
    """Put routers in front of ``sys.stdout`` and ``sys.stderr`` (counted).

    Each call makes sure the streams in place now are routed: code may have
    replaced ``sys.stdout`` since the last install (``redirect_stdout``, a
    test's capture), and what it put there is then wrapped in turn.
    """
    depth = _local.depth
    _local.depth = depth + 1
    if depth and sys.stdout.__class__ is _Router and sys.stderr.__class__ is _Router:
        return  # this thread holds the routers in place already, and they are still there
    global _installed
    with _lock:
        if not depth:
            _installed += 1
        sys.stdout = _router("stdout", sys.stdout)
        sys.stderr = _router("stderr", sys.stderr)


def _router(name: str, original: Any) -> _Router:
    if isinstance(original, _Router):
        return original
    router = _kept.get((name, id(original)))
    if router is None or router._original is not original:
        router = _kept[(name, id(original))] = _Router(name, original)
    return router


def uninstall() -> None:
    """Undo one ``install``; the last one restores the streams (if nobody replaced them since)."""
    depth = _local.depth
    if depth > 1:
        _local.depth = depth - 1
        return
    _local.depth = 0  # (an install made on another thread is undone here too)
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


class route:  # noqa: N801 - used as a function: ``with route(ctx):``
    """Send this thread's standard-stream writes to ``ctx.output`` inside the block (and enter the hooks)."""

    __slots__ = ("ctx", "previous", "stack")

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.stack: contextlib.ExitStack | None = None

    def __enter__(self) -> None:
        self.previous = _local.ctx, _local.sink
        _local.ctx, _local.sink = self.ctx, None  # the sink is made by the first write (most blocks write nothing)
        if _hooks:
            stack = self.stack = contextlib.ExitStack()
            for hook in list(_hooks):
                try:
                    stack.enter_context(hook(self.ctx))
                except Exception:  # a broken hook must not stop the task
                    import logging

                    logging.getLogger("ttasks_ipy").exception("capture hook %r failed", hook)

    def __exit__(self, *exc: Any) -> bool:
        try:
            if self.stack is not None:
                return bool(self.stack.__exit__(*exc))
            return False
        finally:
            sink = _local.sink  # this block's (an inner block put back what it found)
            if sink is not None:
                sink.flush()  # everything written reaches the task before it ends
            _local.ctx, _local.sink = self.previous


def routed_context() -> Any:
    """The context this thread's writes go to, or None."""
    return _local.ctx


def write(stream: str, text: str) -> bool:
    """Write ``text`` to this thread's task's ``stream``, in order with its prints; False if not routed."""
    sink = _local.sink
    if sink is None:
        ctx = _local.ctx
        if ctx is None:
            return False
        sink = _local.sink = _Coalescer(ctx)
    sink.write(stream, text)
    return True


class _Coalescer:
    """One routed block's writes, joined into fewer, larger outputs (in order, at most ``DELAY`` late).

    State, in prose: the block's own thread is the only writer. It appends
    each text to ``parts``, all of them for ``stream``; when it writes to the
    other stream, it first sends what ``parts`` holds (``switch``), so the
    order of the two streams is kept. A drain, from the writer or from the
    timer thread, takes the first ``len(parts)`` items under ``lock`` and
    sends them as one piece; the writer's appends need no lock, because a
    drain only ever removes a prefix and an append only adds at the end. A
    drain happens when ``SIZE`` characters are pending, ``DELAY`` seconds after
    the first pending write (a timer, so a task that went quiet is flushed
    too) and when the block ends. A task printing many short lines then costs
    one engine event per piece, not per line, and the joining is done in C.
    (``size`` is a hint: a lost update only moves a flush.)
    """

    SIZE = 16_384
    DELAY = 0.05

    __slots__ = ("ctx", "stream", "parts", "size", "armed", "limit", "timers", "lock")

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.stream = "stdout"
        self.parts: list[str] = []
        self.size = 0
        self.armed = False
        #: the size at which a writer acts: 0 until a flush is armed (the first write arms it), then SIZE
        self.limit = 0
        services = getattr(ctx, "services", None)
        self.timers = getattr(services, "timers", None)
        #: made by the writer for its first piece (a block that writes nothing needs none); an RLock,
        #: since a subscriber on this thread may print while a piece goes out
        self.lock: Any = None

    def write(self, stream: str, text: str) -> None:
        """Add ``text`` to ``stream`` (the router's inlined path, for other writers on the block's thread)."""
        if text:
            if stream != self.stream:
                self.switch(stream)
            self.parts.append(text)
            self.size += len(text)
            if self.size >= self.limit:
                self.limit_reached()

    def limit_reached(self) -> None:
        """A write took the pending size to ``limit``: arm the flush timer, or flush at ``SIZE``."""
        if not self.size:
            return  # empty writes: nothing to flush
        if self.size >= self.SIZE:
            self.flush()
        elif not self.armed:
            self.arm()

    def switch(self, stream: str) -> None:
        """The writer turns to ``stream``: what the other stream holds goes out first."""
        with self._lock():
            self._drain()
            self.stream = sys.intern(stream)

    def arm(self) -> None:
        """Flush ``DELAY`` seconds from now (on the timer thread)."""
        self.armed = True
        self.limit = self.SIZE
        self._lock()  # before the timer thread can drain
        if self.timers is not None:
            self.timers.schedule(self.DELAY, self._on_timer)

    def _on_timer(self) -> None:
        self.armed = False
        self.limit = 0
        self.flush()

    def flush(self) -> None:
        """Hand everything pending to the task, in order."""
        lock = self.lock
        if lock is None:
            if not self.parts:
                return  # nothing was written: nothing to hand over, nobody else drains
            lock = self._lock()
        with lock:
            self._drain()

    def _lock(self) -> Any:
        lock = self.lock
        if lock is None:  # on the writer's thread, before any timer exists
            lock = self.lock = threading.RLock()
        return lock

    def _drain(self) -> None:
        parts = self.parts
        n = len(parts)
        self.size = 0
        if n:
            piece = parts[:n]
            del parts[:n]  # appends made meanwhile are at the end: they stay for the next drain
            self.ctx.output(self.stream, "".join(piece))
