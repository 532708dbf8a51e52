"""Commands run under a subreaper, so that nothing they start outlives them: ``Supervisor.spawn``.

A process that leaves its session (``setsid cmd``, ``os.setsid()``, a daemon
that double-forks) cannot be found by its session id. It can be found by
parentage, if orphans are not handed to init: Linux hands an orphan to its
nearest ancestor marked ``PR_SET_CHILD_SUBREAPER``. So each command runs
below a small process with that mark, a *shim*::

    kernel ──control socket──► supervisor      (python -I -S supervisor_main.py; own session; a subreaper)
       │                          ├── shim      (forked on demand, reused; a subreaper)
       │                          │     └── bash -c CMD   (posix_spawn; a session of its own: pid = sid)
       │                          └── shim ...
       └──── one socket per shim ────┘

Everything a command starts stays below its shim: by its parent, or, once
orphaned, by adoption. The shim reports the shell's pid and exit status, and
ends the whole tree (SIGTERM to every descendant, a grace period, SIGKILL,
repeated until none is left) when the kernel asks (``end``), when the kernel
is done with the command (``done``: what it left running), and when the
socket breaks because the kernel died. A subreaper with no child has no
descendant, so knowing that a tree is gone needs no ``/proc`` scan. A shim
whose tree is gone says so (``gone``) and waits for the next command: in the
steady state a command costs no fork beyond the one ``posix_spawn`` of its
shell (forking a shim costs about 0.75 ms of CPU, starting an interpreter
per command 10 ms). The supervisor forks shims when the kernel asks for one
and ends the trees of shims that were killed; a killed supervisor costs
running commands nothing and is replaced when the next shim is needed.

What still escapes: processes started on the command's behalf by a service
outside its tree (``systemd-run``, ``at``, ``ssh host``, a container runtime,
an already running ``tmux``/``screen`` server, D-Bus activation), and
processes running as another user (``sudo``) that we may not signal.

Wire format. Kernel to supervisor (``SOCK_SEQPACKET``): ``b"N"`` carrying one
descriptor, the new shim's end of its socket. Kernel to shim (stream):
``{"op": "run", "argv", "env", "cwd", "grace"}`` carrying the stdout and
stderr write ends, ``{"op": "end", "grace"}``, ``{"op": "done"}``, each a 4-byte big-endian length and a
``marshal`` dump (both ends run the same interpreter). Shim to kernel, lines:
``pid SHELL SHIM``, ``error HEX`` (a marshalled ``(errno, text, filename)``),
``exit WAITSTATUS``, ``gone``.

The processes' side is ``supervisor_main.py``, run as a script with only
built-in modules imported, so that it starts fast and its forks stay small.
"""
from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from .proctable import signal_tree

log = logging.getLogger("ttasks_ipy")

#: idle shims kept for the next commands (more are told to exit)
MAX_IDLE = 8
_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "supervisor_main.py")


def _send_frame(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = marshal.dumps(msg)
    header = len(data).to_bytes(4, "big")
    if fds:
        sent = socket.send_fds(sock, [header], list(fds))
        if sent < len(header):
            sock.sendall(header[sent:])
    else:
        sock.sendall(header)
    sock.sendall(data)


# ---- the kernel's side -----------------------------------------------------------
class _ShimLink:
    """The kernel's socket to one shim."""

    __slots__ = ("sock", "lock", "inbox")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()  # one sender at a time
        self.inbox = b""

    def send(self, msg: dict[str, Any], fds: Sequence[int] = ()) -> bool:
        try:
            with self.lock:
                _send_frame(self.sock, msg, fds)
            return True
        except OSError:
            return False

    def lines(self, timeout: float) -> list[str] | None:
        """Complete lines that arrived (waiting up to ``timeout`` for some); None at EOF."""
        try:
            if select.select([self.sock], [], [], timeout)[0]:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
                if not data:
                    return None
                self.inbox += data
        except BlockingIOError:
            pass
        except (OSError, ValueError):
            return None
        *done, self.inbox = self.inbox.split(b"\n")
        return [d.decode() for d in done]

    def close(self) -> None:
        self.sock.close()


class ContainedProcess:
    """A command started by ``Supervisor.spawn``: much like ``subprocess.Popen``, plus ``terminate(grace)``.

    ``pid`` is the shell's pid, which is also its session id. ``stdout`` and
    ``stderr`` are the read ends of its pipes (binary, unbuffered).
    ``fileno()`` becomes readable when there is news of the command (its exit):
    register it with a selector, then call ``poll()``. ``terminate()`` ends the
    whole tree (also what left the session) and returns at once; ``close()``
    says the kernel is done with the command: what it left running is ended.
    """

    def __init__(self, supervisor: Supervisor, link: _ShimLink, pid: int, shim_pid: int,
                 stdout: IO[bytes], stderr: IO[bytes], grace: float, early: list[str]) -> None:
        self.pid = pid
        self.shim_pid = shim_pid
        self.stdout: IO[bytes] | None = stdout
        self.stderr: IO[bytes] | None = stderr
        self.returncode: int | None = None
        self.grace = grace
        self._supervisor = supervisor
        self._link: _ShimLink | None = link
        self._lock = threading.Lock()
        self._lost = False
        self._read(early)

    def __repr__(self) -> str:
        return f"<ContainedProcess pid={self.pid} returncode={self.returncode}>"

    def fileno(self) -> int:
        """A descriptor that is readable when ``poll()`` has news (-1 once closed)."""
        link = self._link
        return link.sock.fileno() if link is not None else -1

    def _read(self, lines: list[str]) -> None:
        for line in lines:
            word, _, rest = line.partition(" ")
            if word == "exit":
                self.returncode = os.waitstatus_to_exitcode(int(rest))

    def _take(self, timeout: float) -> None:
        link = self._link
        if link is None or self._lost:
            return
        lines = link.lines(timeout)
        with self._lock:
            if self._link is not link:
                return
            if lines is None:
                self._shim_lost()
            else:
                self._read(lines)

    def _shim_lost(self) -> None:
        """The shim vanished (killed): end the session by signal; the supervisor ends what it adopted."""
        self._lost = True
        if self.returncode is None:
            signal_tree(self.pid, signal.SIGKILL)
            self.returncode = -signal.SIGKILL
            log.warning("the process supervising command %s was killed; the command was ended", self.pid)

    def poll(self) -> int | None:
        """The exit code once the shell exited (negative: killed by that signal), else None; never blocks."""
        if self.returncode is None:
            self._take(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Block until the shell exits (at most ``timeout`` seconds: ``subprocess.TimeoutExpired``)."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            if self._link is None:
                with self._lock:
                    self._shim_lost()  # closed before the exit was known: nobody can tell it any more
                break
            self._take(0.5 if left is None else min(left, 0.5))
        assert self.returncode is not None
        return self.returncode

    def terminate(self, grace: float | None = None) -> None:
        """End the whole tree: SIGTERM now, SIGKILL what is left after ``grace`` seconds; returns at once."""
        with self._lock:
            link = self._link
            sent = link is not None and not self._lost and link.send(
                {"op": "end", "grace": self.grace if grace is None else grace})
        if not sent and self.returncode is None:
            signal_tree(self.pid, signal.SIGTERM)

    def close(self) -> None:
        """Done with the command: its shim ends whatever is still running (after ``grace``) and is reused."""
        with self._lock:
            link, self._link = self._link, None
            lost = self._lost
        for pipe in (self.stdout, self.stderr):
            if pipe is not None:
                pipe.close()
        if link is not None:
            if not lost and link.send({"op": "done"}):
                self._supervisor._finished(link)
            else:
                link.close()


class _Refused(Exception):
    """A shim could not start the command; carries the ``OSError`` to raise."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class Supervisor:
    """The kernel's side: the supervisor process, its shims, and commands started under them.

    ``start()`` starts the process (at load, so that the first command does
    not wait for it); ``spawn()`` starts one command on an idle shim (or a new
    one) and returns a ``ContainedProcess``. A supervisor found dead is
    replaced when a new shim is needed. ``env`` is the supervisor's own
    environment (a command gets its own in ``spawn``).
    """

    def __init__(self, grace: float = 2.0, env: Mapping[str, str] | None = None) -> None:
        self._grace = grace
        self._env = dict(os.environ if env is None else env)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._finishing: list[_ShimLink] = []  # sent "done", "gone" not read yet
        self._idle: list[_ShimLink] = []
        self._closed = False
        self._forks = 0

    @property
    def pid(self) -> int | None:
        """The supervisor process's pid once started."""
        p = self._proc
        return p.pid if p is not None else None

    def statistics(self) -> dict[str, int]:
        """Shims forked so far, idle now, finishing now."""
        with self._lock:
            return {"forked": self._forks, "idle": len(self._idle), "finishing": len(self._finishing)}

    def start(self) -> None:
        """Start the supervisor process now; idempotent."""
        with self._lock:
            if not self._closed:
                self._ensure()

    def _ensure(self) -> socket.socket:
        if self._ctl is not None and self._proc is not None and self._proc.poll() is None:
            return self._ctl
        self._drop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _MAIN, str(self._grace), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env=self._env,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._ctl = mine
        return mine

    def _drop(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.kill()
            threading.Thread(target=proc.wait, name="ttasks-supervisor-reap", daemon=True).start()

    def _shim(self) -> _ShimLink:
        """An idle shim (one that finished its last command), else a new one; caller holds the lock."""
        still = []
        for link in self._finishing:
            lines = link.lines(0)
            if lines is None:
                link.close()
            elif "gone" in lines:
                self._idle.append(link)
            else:
                still.append(link)
        self._finishing = still
        if self._idle:
            return self._idle.pop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for attempt in range(2):
                ctl = self._ensure()
                try:
                    socket.send_fds(ctl, [b"N"], [theirs.fileno()])
                    break
                except OSError:
                    self._drop()  # dead: a new one on the next round
                    if attempt:
                        raise
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._forks += 1
        return _ShimLink(mine)

    def _finished(self, link: _ShimLink) -> None:
        """A command's shim was told ``done``: reuse it once it says ``gone``."""
        with self._lock:
            if self._closed or len(self._finishing) + len(self._idle) >= MAX_IDLE:
                link.close()  # it ends what is left and exits
            else:
                self._finishing.append(link)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None = None,
        grace: float | None = None,
        timeout: float = 30.0,
    ) -> ContainedProcess:
        """Start ``argv`` in a session of its own (stdin from /dev/null, stdout and stderr to pipes).

        ``cwd`` defaults to the caller's working directory, ``grace`` is the
        SIGTERM-to-SIGKILL delay for what the command leaves behind. Raises what
        ``subprocess.Popen`` would for a command that cannot start
        (``FileNotFoundError``, ``PermissionError``...), and ``OSError`` if the
        supervisor does not answer within ``timeout`` seconds.
        """
        grace = self._grace if grace is None else grace
        request = {"op": "run", "argv": list(argv), "env": dict(env), "cwd": os.fspath(cwd or _cwd()),
                   "grace": grace}
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        link: _ShimLink | None = None
        try:
            with self._lock:
                if self._closed:
                    raise OSError("the command supervisor is shut down")
                link = self._shim()
            if not link.send(request, (out_w, err_w)):
                raise OSError("the command supervisor's shim went away")
            os.close(out_w)
            os.close(err_w)
            out_w = err_w = -1
            pid, shim, early = self._answer(link, timeout)
        except _Refused as e:  # the command cannot start; its shim is fine
            for fd in (out_r, err_r):
                os.close(fd)
            with self._lock:
                self._idle.append(link) if not self._closed else link.close()  # type: ignore[func-returns-value]
            raise e.error from None
        except BaseException:
            for fd in (out_r, err_r, out_w, err_w):
                if fd >= 0:
                    os.close(fd)
            if link is not None:
                link.close()
            raise
        return ContainedProcess(self, link, pid, shim, open(out_r, "rb", buffering=0),
                                open(err_r, "rb", buffering=0), grace, early)

    @staticmethod
    def _answer(link: _ShimLink, timeout: float) -> tuple[int, int, list[str]]:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise OSError(f"the command supervisor did not answer in {timeout:g}s")
            lines = link.lines(left)
            if lines is None:
                raise OSError("the command supervisor went away before starting the command")
            for i, line in enumerate(lines):
                word, _, rest = line.partition(" ")
                if word == "error":
                    code, text, filename = marshal.loads(bytes.fromhex(rest))
                    raise _Refused(OSError(code, text, filename) if filename is not None else OSError(code, text))
                if word == "pid":
                    pid, shim = (int(w) for w in rest.split())
                    return pid, shim, lines[i + 1:]

    def close(self) -> None:
        """Let go of the supervisor and its idle shims; running commands end when their ``close()`` comes."""
        with self._lock:
            self._closed = True
            for link in self._idle + self._finishing:
                link.close()
            self._idle.clear()
            self._finishing.clear()
            if self._ctl is not None:
                self._ctl.close()
                self._ctl = None
            proc, self._proc = self._proc, None
        if proc is not None:
            threading.Thread(target=proc.wait, name="ttasks-supervisor-reap", daemon=True).start()


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the folder was deleted under us
        return "/"
