"""The session's link to Dask: which tasks go there, and the one ``DaskBackend`` they go to.

``choose(...)`` says where a task runs from its options and ``TTasks.backend``
(prompts and services stay here unless told otherwise; a bad mix of options
is one ``UsageError``). ``backend()`` connects on first use, from the settings
(``dask_address``: a scheduler; empty: a ``LocalCluster`` of ``dask_workers``
processes of ``dask_threads_per_worker`` threads), and says once where it
connected. When one of those settings changes, the next Dask task connects
anew; the old cluster is closed once its tasks have ended. Everything here is
closed with the session.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from IPython.core.error import UsageError

from ..core import TaskError

log = logging.getLogger("ttasks_ipy")

#: the settings that choose the cluster: a change applies to the next Dask task
CLUSTER_SETTINGS = ("dask_address", "dask_workers", "dask_threads_per_worker")


class DaskLink:
    """The Dask backend of one session: made on first use, made again after its settings change."""

    def __init__(self, executor: Any, config: Any) -> None:
        self.executor = executor
        self.config = config
        self._backend: Any = None
        self._retired: list[Any] = []
        self._lock = threading.Lock()
        config.observe(self._settings_changed, names=list(CLUSTER_SETTINGS))

    # ---- where a task runs ----------------------------------------------
    def choose(self, magic: str, kind: str, *, dask: bool = False, local: bool = False,
               process: bool = False, service: bool = False) -> str:
        """The backend name for a task of ``kind`` ('python', 'bash', 'prompt') dispatched with these options."""
        if dask and local:
            raise UsageError(f"{magic}: --dask and --local say different places: give one")
        if dask and process:
            raise UsageError(f"{magic}: --dask and --process say different places: give one")
        if kind == "prompt":
            if dask:
                raise UsageError(f"{magic}: a prompt runs here (it waits on the network, not the CPU): drop --dask")
            return "thread"
        if process:
            return "process"
        if dask:
            return "dask"
        if local or service or self.config.backend != "dask":
            return "thread"
        return "dask"

    # ---- the backend ----------------------------------------------------
    def backend(self) -> Any:
        """The connected ``DaskBackend`` (connecting now if needed); raises ``BackendUnavailable`` (one line)."""
        with self._lock:
            b = self._backend
            if b is not None and getattr(b.client, "status", "running") != "running":
                self._retire_locked(b)
                b = None
            if b is None:
                from ..core.backends.dask import connect

                c = self.config
                b = connect(c.dask_address, workers=c.dask_workers, threads_per_worker=c.dask_threads_per_worker,
                            timeout=c.dask_timeout)
                self._backend = b
                self.executor.add_backend(b)
                print(_connected_line(b, c.dask_address))
            return b

    def ensure(self, magic: str) -> None:
        """Connect now for a task about to be dispatched; a ``UsageError`` of one line if Dask cannot be reached."""
        try:
            self.backend()
        except TaskError as e:
            raise UsageError(f"{magic}: {e}") from None

    def _settings_changed(self, change: dict[str, Any]) -> None:
        with self._lock:
            if self._backend is not None:
                self._retire_locked(self._backend)
                self._backend = None
                print(f"[bg] TTasks.{change['name']} changed: the next Dask task connects to the new cluster"
                      " (tasks running on the old one finish there)")

    def _retire_locked(self, backend: Any) -> None:
        self._retired.append(backend)
        threading.Thread(target=self._close_when_idle, args=(backend,), name="ttasks-dask-retire",
                         daemon=True).start()

    def _close_when_idle(self, backend: Any) -> None:
        deadline = time.monotonic() + 24 * 3600
        while not backend.idle and time.monotonic() < deadline:
            time.sleep(0.5)
        self._close(backend)

    def _close(self, backend: Any) -> None:
        try:
            backend.shutdown()
        except Exception:
            log.debug("closing a Dask backend failed", exc_info=True)
        with self._lock:
            if backend in self._retired:
                self._retired.remove(backend)

    def shutdown(self) -> None:
        """Close every Dask backend of the session (the executor closed the current one already)."""
        try:
            self.config.unobserve(self._settings_changed, names=list(CLUSTER_SETTINGS))
        except ValueError:
            pass
        with self._lock:
            backends = list(self._retired) + ([self._backend] if self._backend is not None else [])
            self._backend = None
        for b in backends:
            self._close(b)


def _connected_line(backend: Any, address: str) -> str:
    if address:
        where = f"connected to {backend.address}"
    else:
        n = len(getattr(backend.cluster, "workers", ()) or ())
        where = f"started a LocalCluster of {n} worker process{'es' if n != 1 else ''} at {backend.address}"
    dashboard = f"; dashboard {backend.dashboard}" if backend.dashboard else ""
    return f"[bg] Dask: {where}{dashboard}"


__all__ = ["CLUSTER_SETTINGS", "DaskLink"]
