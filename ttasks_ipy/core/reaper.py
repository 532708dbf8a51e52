"""A small process that ends every task's process tree when the kernel dies.

The kernel starts it (at construction, before any task) in a session of its
own and keeps the write end of a pipe to its stdin. Two things say what to
end: a token, given on the reaper's command line, that every process a task
starts carries in its environment (``TTASKS_OWNERS``, see ``Reaper.mark``),
so a command is covered before it is even forked; and lines ``+SID`` /
``-SID`` that register and forget a session (worker processes, a task's
session once known). When the pipe closes (the kernel exited, was SIGKILLed
or OOM-killed), every registered session and every marked process gets
SIGTERM, a grace period, then SIGKILL; then the folders named by lines
``R/path`` are removed.

The reaper process runs this file as a script (``python -I -S reaper.py GRACE
TOKEN``): standard library only, no package import, so it starts in about 10 ms.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

if __package__:
    from .proctable import mark_environ, marked_processes, session_members, signal_pids
else:  # the reaper process: this file run as a script, its sibling imported without the package
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from proctable import mark_environ, marked_processes, session_members, signal_pids  # type: ignore[no-redef]


log = logging.getLogger("ttasks_ipy")


# ---- the reaper process ---------------------------------------------------
def main(argv: list[str]) -> int:
    """Read registrations until the pipe closes, then end everything registered or marked."""
    grace = float(argv[1]) if len(argv) > 1 else 2.0
    token = argv[2] if len(argv) > 2 else ""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the pipe closing ends us
    sids: set[int] = set()
    folders: list[bytes] = []
    for raw in sys.stdin.buffer:
        line = raw.rstrip(b"\n")
        if line[:1] == b"+":
            sids.add(int(line[1:]))
        elif line[:1] == b"=":
            grace = float(line[1:])
        elif line[:1] == b"-":
            sids.discard(int(line[1:]))
        elif line[:1] == b"R":
            folders.append(line[1:])
    end_all(sids, token, grace)
    for folder in folders:  # after the processes that wrote into it
        shutil.rmtree(os.fsdecode(folder), ignore_errors=True)
    return 0


def _targets(sids: set[int], token: str) -> list[int]:
    found = set(marked_processes(token)) if token else set()
    for sid in sids:
        found.update(session_members(sid))
    found.discard(os.getpid())
    return sorted(found)


def end_all(sids: set[int], token: str, grace: float) -> None:
    """SIGTERM every process of ``sids`` and every process marked with ``token``; SIGKILL what outlives ``grace``."""
    for sid in sids:
        try:
            os.killpg(sid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    live = _targets(sids, token)
    signal_pids(live, signal.SIGTERM)
    end = time.monotonic() + grace
    while live and time.monotonic() < end:
        time.sleep(0.05)
        live = _targets(sids, token)
    for _ in range(50):  # what forks while it is being killed is found on the next round
        if not live:
            return
        signal_pids(live, signal.SIGKILL)
        time.sleep(0.02)
        live = _targets(sids, token)


# ---- the kernel's side ----------------------------------------------------
#: for tests only: seconds ``register`` waits first, holding open the window between a fork and its registration
_REGISTER_DELAY = float(os.environ.get("TTASKS_TEST_REGISTER_DELAY") or 0)


class Reaper:
    """The kernel's side: starts the reaper process and tells it what to end if the kernel dies.

    ``start()`` (also done by the first ``register``) starts the process;
    ``mark(env)`` adds this reaper's token to a child's environment, which
    covers that child and everything it starts from the moment it is forked;
    ``register(sid)`` adds a whole session (for processes started unmarked).

    A thread watches the reaper process: if it dies (killed by someone), a new
    one is started at once with the same token and every registered session,
    and a warning is logged. A reaper that keeps dying right after its start is
    restarted with a growing delay (up to a minute), never in a tight loop.
    """

    def __init__(self, grace: float, token: str | None = None) -> None:
        self._lock = threading.Lock()
        self._grace = grace
        self.token = token or f"{os.getpid()}.{secrets.token_hex(6)}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._sids: set[int] = set()
        self._folders: list[bytes] = []
        self._closed = False
        self._started_at = 0.0
        self._quick_deaths = 0
        self._not_before = 0.0
        self._restarts = 0
        self._lost: tuple[int, str] | None = None

    def start(self) -> None:
        """Start the reaper process now (so that nothing started later runs unprotected); idempotent."""
        with self._lock:
            if not self._closed:
                try:
                    self._ensure()
                except OSError:
                    log.exception("could not start the reaper process: tasks are not ended if the kernel dies")

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        """The live reaper process, started (and told every session) if needed; None while backing off."""
        p = self._proc
        if p is not None and p.poll() is None:
            return p
        if p is not None:
            self._proc = None
            self._replaced(p)
        if time.monotonic() < self._not_before:
            return None
        p = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(self._grace), self.token],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
        self._proc = p
        self._started_at = time.monotonic()
        if self._sids or self._folders:
            assert p.stdin is not None
            p.stdin.write("".join(f"+{sid}\n" for sid in sorted(self._sids)).encode())
            p.stdin.write(b"".join(b"R" + f + b"\n" for f in self._folders))
            p.stdin.flush()
        threading.Thread(target=self._watch, args=(p,), name="ttasks-reaper-watch", daemon=True).start()
        if self._lost is not None:
            log.warning("the reaper process %s was %s; started a new one and re-registered %d task sessions",
                        *self._lost, len(self._sids))
            self._lost = None
        return p

    def _replaced(self, dead: subprocess.Popen[bytes]) -> None:
        """Bookkeeping when ``dead`` (the reaper process) is found dead: the warning and the back-off."""
        self._restarts += 1
        lived = time.monotonic() - self._started_at
        self._quick_deaths = self._quick_deaths + 1 if lived < 1.0 else 0
        if self._quick_deaths > 1:
            self._not_before = time.monotonic() + min(60.0, 2.0 ** (self._quick_deaths - 2))
        code = dead.returncode or 0
        self._lost = (dead.pid, f"killed ({_signal_name(-code)})" if code < 0 else f"ended (exit status {code})")
        if self._not_before > time.monotonic():
            log.warning("the reaper process %s was %s again within a second of its start; next try in %.0fs",
                        *self._lost, self._not_before - time.monotonic())

    def _watch(self, p: subprocess.Popen[bytes]) -> None:
        """Wait for the reaper process ``p`` to exit; replace it unless closing."""
        while True:
            try:
                p.wait()
            except Exception:  # noqa: BLE001 - whoever reaped it, it is gone
                pass
            with self._lock:
                if self._closed or self._proc not in (p, None):  # None: backing off, this thread retries
                    return
                try:
                    if self._ensure() is not None:
                        return
                    delay = self._not_before - time.monotonic()
                except OSError:
                    log.exception("could not start a new reaper process")
                    delay = 5.0
            time.sleep(max(delay, 0.05))  # backing off: a reaper that dies at once is not restarted in a loop

    def mark(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` for a child process that the reaper must end if the kernel dies (returns a new dict)."""
        return mark_environ(env, self.token)

    def set_grace(self, grace: float) -> None:
        """The SIGTERM-to-SIGKILL delay from now on (told to a running reaper at once)."""
        self._grace = grace
        with self._lock:
            running = self._proc is not None and self._proc.poll() is None
        if running:
            self._send(f"={grace}\n")

    def register(self, sid: int) -> None:
        """Have the reaper end session ``sid`` if the kernel dies."""
        if _REGISTER_DELAY:
            time.sleep(_REGISTER_DELAY)
        self._send(f"+{sid}\n", add=sid)

    def remove_on_exit(self, folder: str | os.PathLike[str]) -> None:
        """Have the reaper remove ``folder`` after ending the processes, when the kernel is gone."""
        path = os.fsencode(os.path.abspath(folder))
        if b"\n" in path:
            raise ValueError(f"a folder name with a newline cannot be handed to the reaper: {folder!r}")
        with self._lock:
            self._folders.append(path)
        self._send("R" + os.fsdecode(path) + "\n")

    def forget(self, sid: int) -> None:
        """The session ended on its own."""
        self._send(f"-{sid}\n", remove=sid)

    def _send(self, line: str, add: int | None = None, remove: int | None = None) -> None:
        with self._lock:
            if self._closed:  # closing is final: no new reaper after shutdown
                return
            if add is not None:
                self._sids.add(add)
            if remove is not None:
                self._sids.discard(remove)
            for _ in range(2):  # a reaper found dead here is replaced (with every session) and told again
                try:
                    p = self._ensure()
                    if p is None:
                        return  # backing off; the next reaper gets every session
                    assert p.stdin is not None
                    p.stdin.write(os.fsencode(line))  # a new reaper already has it: a repeat changes nothing
                    p.stdin.flush()
                    return
                except (OSError, ValueError):
                    pass

    @property
    def pid(self) -> int | None:
        """The reaper's pid once started."""
        p = self._proc
        return p.pid if p else None

    @property
    def sessions(self) -> frozenset[int]:
        """The sessions registered now."""
        with self._lock:
            return frozenset(self._sids)

    @property
    def restarts(self) -> int:
        """How many times a dead reaper process was found and replaced."""
        return self._restarts

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


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
