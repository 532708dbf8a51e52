"""The IPython side: load/unload, settings, the session, delivery into ``user_ns``, notices, capture, magics.

Thin glue over ``ttasks_ipy.syntax`` (the user's words), ``ttasks_ipy.views``
and ``ttasks_ipy.core`` (the engine). ``session()`` is the current shell's
session (its executor, worker pool and displays).
"""
from __future__ import annotations

from .extension import session

__all__ = ["session"]
