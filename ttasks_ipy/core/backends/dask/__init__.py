"""The Dask backend: the same jobs on the workers of a Dask cluster (``LocalCluster`` or a scheduler's address).

``backend`` (``DaskBackend``: the kernel's side), ``worker`` (what runs on a
Dask worker: the job wrapper, event forwarding, the cancel watch) and
``cluster`` (``connect``: reach a scheduler or start a ``LocalCluster``).
Importing this package imports ``dask.distributed`` only when ``connect`` is called.
"""
from __future__ import annotations

from .cluster import INSTALL_HINT, connect

__all__ = ["INSTALL_HINT", "connect"]
