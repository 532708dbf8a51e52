"""The one event-loop thread every prompt of the process runs on.

Prompts wait on the network, not on the CPU: a thread each would be wasted, so
their requests are coroutines on one dedicated asyncio loop in a daemon thread,
started on first use (a kernel's own loop is busy running cells; FIELD-NOTES).
The loop owns one shared ``httpx.AsyncClient`` (a connection pool for all
prompts) and one ``asyncio.Semaphore`` per concurrency limit in use.

``submit(coro)`` may be called from any thread and returns a
``concurrent.futures.Future``; cancelling that future cancels the coroutine on
the loop (and so closes its HTTP connection). ``shutdown()`` ends it all; a
later ``submit`` starts a new loop. After a ``fork`` the child starts its own.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

log = logging.getLogger("ttasks_ipy")
T = TypeVar("T")


class _LoopThread:
    """A running loop in a daemon thread, with the shared client and limits."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None
        self._limits: dict[int, asyncio.Semaphore] = {}
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ttasks-llm-loop", daemon=True)
        _by_loop[self.loop] = self
        self.thread.start()
        self._ready.wait(5.0)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self._close())
            except Exception:
                log.exception("closing the LLM loop failed")
            _by_loop.pop(self.loop, None)
            self.loop.close()

    async def _close(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ---- used by coroutines on the loop --------------------------------
    def client(self) -> httpx.AsyncClient:
        """The shared HTTP client (call on the loop)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
                follow_redirects=False,
            )
        return self._client

    def limit(self, n: int) -> asyncio.Semaphore:
        """The semaphore shared by every prompt whose settings say ``max_concurrency=n`` (call on the loop)."""
        sem = self._limits.get(n)
        if sem is None:
            sem = self._limits[n] = asyncio.Semaphore(n)
        return sem

    # ---- used from other threads ---------------------------------------
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


_lock = threading.Lock()
_shared: _LoopThread | None = None
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopThread] = weakref.WeakKeyDictionary()


def shared_loop() -> _LoopThread:
    """The process's LLM loop thread, started on first use."""
    global _shared
    with _lock:
        if _shared is None or _shared.pid != os.getpid() or not _shared.thread.is_alive():
            _shared = _LoopThread()
        return _shared


def current() -> _LoopThread:
    """The loop thread a coroutine runs on (call only from that loop)."""
    lt = _by_loop.get(asyncio.get_running_loop())
    if lt is None:
        raise RuntimeError("LLM coroutines run only on the shared LLM loop (use submit)")
    return lt


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run ``coro`` on the shared loop; returns at once with its future."""
    return shared_loop().submit(coro)


def shutdown(timeout: float = 2.0) -> None:
    """Cancel every prompt still running, close the HTTP client, stop the thread (bounded by ``timeout``)."""
    global _shared
    with _lock:
        lt, _shared = _shared, None
    if lt is not None and lt.pid == os.getpid():
        lt.stop(timeout)


def is_running() -> bool:
    """True while the loop thread runs (for tests and diagnostics)."""
    lt = _shared
    return lt is not None and lt.thread.is_alive()
