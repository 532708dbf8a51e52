"""Where an attempt runs: the small backend interface and its local implementations.

A backend takes a callable (one attempt, already wrapped by the executor) and
runs it somewhere, returning at once. ``ThreadBackend`` gives each attempt a
daemon thread; ``SyncBackend`` runs it inline, for tests of the engine.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable


class Backend(ABC):
    """Runs attempts."""

    @abstractmethod
    def start(self, fn: Callable[[], None], name: str) -> None:
        """Run ``fn`` (which never raises) somewhere; return at once."""

    def shutdown(self) -> None:
        """Release what the backend holds."""


class ThreadBackend(Backend):
    """One daemon thread per attempt (an attempt may outlive its cancel: a thread cannot be killed)."""

    def start(self, fn: Callable[[], None], name: str) -> None:
        threading.Thread(target=fn, name=name, daemon=True).start()


class SyncBackend(Backend):
    """Runs each attempt inline in ``start``: deterministic, for engine tests."""

    def start(self, fn: Callable[[], None], name: str) -> None:
        fn()
