"""Reaching a Dask cluster: ``connect`` to a scheduler's address, or start a ``LocalCluster`` of our own.

Nothing here is imported before a Dask task is dispatched; without
``dask.distributed`` installed, ``connect`` raises one line saying what to
install. An address that cannot be reached within ``timeout`` is one line too
(``BackendUnavailable``), and nothing is started.
"""
from __future__ import annotations

import logging
from typing import Any

from ...errors import BackendUnavailable
from .backend import DaskBackend

INSTALL_HINT = "pip install 'ttasks_ipy[dask]'"


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text.splitlines()[0] if text.strip() else type(e).__name__


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise BackendUnavailable(f"Dask tasks need dask.distributed, which is not installed: {INSTALL_HINT}") from None
    return distributed


def connect(address: str = "", *, workers: int = 2, threads_per_worker: int = 1, timeout: float = 10.0) -> DaskBackend:
    """A ``DaskBackend`` on the scheduler at ``address``, or on a new ``LocalCluster`` when it is empty.

    The ``LocalCluster`` has ``workers`` worker processes of ``threads_per_worker``
    threads; the backend closes it on ``shutdown``. Raises ``BackendUnavailable``.
    """
    distributed = _distributed()
    cluster = None
    if address:
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except Exception as e:
            raise BackendUnavailable(
                f"cannot reach the Dask scheduler at {address}: {_one_line(e)} "
                "(start it, or set TTasks.dask_address to another, or to '' for a LocalCluster)"
            ) from None
    else:
        try:
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                dashboard_address="127.0.0.1:0", host="127.0.0.1", silence_logs=logging.ERROR,
            )
            client = distributed.Client(cluster, timeout=timeout, set_as_default=False)
        except Exception as e:
            if cluster is not None:
                cluster.close()
            raise BackendUnavailable(f"cannot start a Dask LocalCluster: {_one_line(e)}") from None
    _send_promptly(client)
    return DaskBackend(client, cluster=cluster, dashboard=dashboard_link(client))


#: seconds between two batches the client sends to the scheduler (``distributed`` uses 10 ms)
CLIENT_BATCH_INTERVAL = 0.002


def _send_promptly(client: Any) -> None:
    """Let the client's messages to the scheduler leave every 2 ms instead of every 10 ms.

    ``distributed`` batches a client's messages and sends at most one batch per
    10 ms; its workers and scheduler batch at 2 ms. A graph here submits a
    dependent task when its dependency's reply reaches the kernel, so each step
    of a chain waited out most of that window (11 ms a step against Dask's own
    6 ms). Bare Dask submits a whole graph in one batch and does not notice.
    """
    comm = getattr(client, "scheduler_comm", None)
    if comm is not None and hasattr(comm, "interval"):
        comm.interval = CLIENT_BATCH_INTERVAL


def dashboard_link(client: Any) -> str | None:
    """The address of the cluster's dashboard, or None when it has none (bokeh not installed there)."""
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:
        return None


__all__ = ["INSTALL_HINT", "connect", "dashboard_link"]
