"""Where attempts run: the small ``Backend`` interface (``base``) and its implementations.

``ThreadBackend`` (reused threads of this process), ``SyncBackend`` (inline,
for engine tests) and ``ProcessBackend`` (our worker processes, in
``process/``) implement one interface; a cluster backend implements the same.
"""
from __future__ import annotations

from .base import Backend, BackendStats, Job, JobEvents, JobHandle
from .sync import SyncBackend
from .thread import ThreadBackend

__all__ = ["Backend", "BackendStats", "Job", "JobEvents", "JobHandle", "SyncBackend", "ThreadBackend"]
