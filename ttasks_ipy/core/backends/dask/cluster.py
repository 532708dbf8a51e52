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
    return DaskBackend(client, cluster=cluster, dashboard=dashboard_link(client))


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
