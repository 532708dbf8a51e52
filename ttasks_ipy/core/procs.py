"""Ending whole process trees: SIGTERM to the group, a grace period, SIGKILL, survivors.

Every task subprocess leads its own session, so its session id names the whole
tree, including children that moved to another process group. Nothing here
blocks: the grace period runs on the timer thread.
"""
from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

from .proctable import session_members, signal_tree, tree_alive
from .timers import Timers

log = logging.getLogger("ttasks_ipy")


def describe_exit(returncode: int) -> str:
    """'exit status 2', 'killed by SIGTERM' or 'killed by signal 99'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


__all__ = ["describe_exit", "kill_tree_now", "session_members", "signal_tree", "terminate_tree", "tree_alive"]


def terminate_tree(
    sid: int,
    grace: float,
    timers: Timers,
    on_gone: Callable[[], None] | None = None,
) -> None:
    """SIGTERM the tree now, SIGKILL what is left after ``grace`` seconds; returns at once.

    The caller pays for one ``killpg``; the ``/proc`` scan for members that left
    the process group (about 1 ms) runs on the timer thread.
    """
    try:
        os.killpg(sid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    timers.schedule(0, lambda: signal_tree(sid, signal.SIGTERM))

    def deadline() -> None:
        if tree_alive(sid):
            log.debug("session %s survived SIGTERM for %.1fs: SIGKILL", sid, grace)
            signal_tree(sid, signal.SIGKILL)
            timers.schedule(0.2, check)
        elif on_gone:
            on_gone()

    def check() -> None:
        left = session_members(sid)
        if left:
            log.warning("processes %s of task session %s survived SIGKILL", left, sid)
            signal_tree(sid, signal.SIGKILL)
        if on_gone:
            on_gone()

    timers.schedule(grace, deadline)


def kill_tree_now(sid: int, grace: float = 0.5) -> None:
    """Blocking variant for shutdown: SIGTERM, wait up to ``grace``, SIGKILL."""
    import time

    if not signal_tree(sid, signal.SIGTERM):
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not tree_alive(sid):
            return
        time.sleep(0.02)
    signal_tree(sid, signal.SIGKILL)
