"""A small process that ends every task's process tree when the kernel dies.

The kernel starts it in a session of its own and keeps the write end of a pipe
to its stdin. Lines ``+SID`` and ``-SID`` register and forget a task session.
When the pipe closes (the kernel exited, was SIGKILLed or OOM-killed), every
registered tree gets SIGTERM, a grace period, then SIGKILL.

Run as ``python -m ttasks_ipy.core.reaper GRACE``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time


def main(argv: list[str]) -> int:
    grace = float(argv[1]) if len(argv) > 1 else 2.0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the pipe closing ends us
    sids: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if line[:1] == b"+":
            sids.add(int(line[1:]))
        elif line[:1] == b"=":
            grace = float(line[1:])
        elif line[:1] == b"-":
            sids.discard(int(line[1:]))
    _end_all(sids, grace)
    return 0


def _end_all(sids: set[int], grace: float) -> None:
    from .procs import signal_tree, tree_alive

    live = [s for s in sids if signal_tree(s, signal.SIGTERM)]
    end = time.monotonic() + grace
    while live and time.monotonic() < end:
        live = [s for s in live if tree_alive(s)]
        time.sleep(0.05)
    for s in live:
        signal_tree(s, signal.SIGKILL)


class Reaper:
    """The kernel's side: starts the reaper process and tells it about task sessions."""

    def __init__(self, grace: float) -> None:
        self._lock = threading.Lock()
        self._grace = grace
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ttasks_ipy.core.reaper", str(self._grace)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
                cwd="/",
                env={**os.environ, "PYTHONPATH": _package_root()},
            )
        return self._proc

    def set_grace(self, grace: float) -> None:
        """The SIGTERM-to-SIGKILL delay from now on (told to a running reaper at once)."""
        self._grace = grace
        with self._lock:
            running = self._proc is not None and self._proc.poll() is None
        if running:
            self._send(f"={grace}\n")

    def register(self, sid: int) -> None:
        """Have the reaper end session ``sid`` if the kernel dies."""
        self._send(f"+{sid}\n")

    def forget(self, sid: int) -> None:
        """The session ended on its own."""
        self._send(f"-{sid}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._closed:  # closing is final: no new reaper after shutdown
                return
            try:
                p = self._ensure()
                assert p.stdin is not None
                p.stdin.write(line.encode())
                p.stdin.flush()
            except (OSError, ValueError):
                self._proc = None

    @property
    def pid(self) -> int | None:
        """The reaper's pid once started."""
        return self._proc.pid if self._proc else None

    def close(self) -> None:
        """Close the pipe: the reaper ends what is still registered and exits."""
        with self._lock:
            self._closed = True
            if self._proc is not None and self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass
            self._proc = None


def _package_root() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    extra = os.environ.get("PYTHONPATH")
    return root + (os.pathsep + extra if extra else "")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
