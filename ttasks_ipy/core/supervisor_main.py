"""The supervisor process and its shims: the other side of ``core/supervisor.py`` (read that first).

Run as ``python -I -S supervisor_main.py GRACE FD``: ``FD`` is the control
socket. Only built-in modules and ``proctable`` are imported (``ctypes``
for ``prctl``), so the supervisor starts in about 20 ms and each shim, a fork
of it, stays small. Frames are ``marshal``-encoded: both ends run the same
interpreter.
"""
from __future__ import annotations

import _socket
import array
import errno
import marshal
import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proctable import descendants, signal_pids, snapshot  # noqa: E402 - the sibling, without the package

PR_SET_CHILD_SUBREAPER = 36
HEADER = 4  # bytes of a frame's big-endian length
#: how often an ending tree is looked at again, seconds
POLL = 0.05
#: for tests only: seconds a shim waits after starting a command and before reporting it
_REPORT_DELAY = float(os.environ.get("TTASKS_TEST_SPAWN_DELAY") or 0)


def set_subreaper() -> bool:
    """Mark this process a child subreaper (Linux); False where that is not possible."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def recv_fds(sock: _socket.socket, size: int, maxfds: int) -> tuple[bytes, list[int]]:
    """``socket.recv_fds`` without importing ``socket``; received descriptors are made close-on-exec."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(size, _socket.CMSG_LEN(maxfds * fds.itemsize))
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    for fd in fds:
        os.set_inheritable(fd, False)
    return msg, list(fds)


def recv_exactly(sock: _socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def send_line(sock: _socket.socket | None, text: str) -> bool:
    if sock is None:
        return False
    try:
        sock.sendall(text.encode() + b"\n")
        return True
    except OSError:
        return False


def which(name: str, path: str) -> str | None:
    for folder in path.split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# ---- the shim: one command at a time ----------------------------------------------
class Shim:
    """Runs commands one after another and ends each one's whole tree; a process forked from the supervisor."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.me = os.getpid()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self._which: dict[tuple[str, str], str | None] = {}

    def serve(self) -> None:
        """Take commands until the kernel closes the socket (or dies)."""
        set_subreaper()
        while True:
            frame = self._recv_frame()
            if frame is None:
                return
            msg, fds = frame
            if msg.get("op") != "run" or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            if not self._run(msg, fds[0], fds[1]):
                return

    def _recv_frame(self) -> tuple[dict, list[int]] | None:
        try:
            head, fds = recv_fds(self.sock, HEADER, 2)
            if head and len(head) < HEADER:
                head += recv_exactly(self.sock, HEADER - len(head)) or b""
            body = recv_exactly(self.sock, int.from_bytes(head, "big")) if len(head) == HEADER else None
        except OSError:
            return None
        if body is None:
            return None
        return marshal.loads(body), fds

    def _start(self, msg: dict, out_w: int, err_w: int) -> int | None:
        argv = list(msg["argv"])
        env = dict(msg["env"])
        try:
            os.chdir(msg.get("cwd") or "/")
            exe = argv[0]
            if os.sep not in exe:
                key = (exe, env.get("PATH", os.defpath))
                if key not in self._which:
                    self._which[key] = which(*key)
                found = self._which[key]
                if found is None:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), exe)
                exe = found
            return os.posix_spawn(
                exe, argv, env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsid=True,
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD),
            )
        except OSError as e:
            self._which.clear()
            send_line(self.sock, "error " + marshal.dumps((e.errno or 0, e.strerror or str(e), e.filename)).hex())
            return None
        finally:
            os.close(out_w)
            os.close(err_w)

    def _run(self, msg: dict, out_w: int, err_w: int) -> bool:
        """One command, from spawn to its tree gone; False if the kernel went away (the shim exits then)."""
        pid = self._start(msg, out_w, err_w)
        if pid is None:
            return True
        if _REPORT_DELAY:
            time.sleep(_REPORT_DELAY)
        send_line(self.sock, f"pid {pid} {self.me}")
        grace = float(msg.get("grace", 2.0))
        deadline: float | None = None  # set once ending
        done = False
        connected = True
        children = True
        inbox = b""
        while True:
            ready, _, _ = select.select([self.wake_r] + ([self.sock] if connected else []), [], [],
                                        POLL if deadline is not None and children else None)
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
            if connected and self.sock in ready:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the kernel died or let go: end what is left, then exit
                    connected = False
                    done = True
                    deadline = self._end(pid, grace, deadline)
                inbox += data
                while len(inbox) >= HEADER and len(inbox) >= HEADER + int.from_bytes(inbox[:HEADER], "big"):
                    n = int.from_bytes(inbox[:HEADER], "big")
                    op = marshal.loads(inbox[HEADER:HEADER + n])
                    inbox = inbox[HEADER + n:]
                    if op.get("op") == "end":
                        deadline = self._end(pid, float(op.get("grace", grace)), deadline)
                    elif op.get("op") == "done":
                        done = True
                        deadline = self._end(pid, grace, deadline)
            children = self._reap(pid)
            if not children and done:
                if connected:
                    send_line(self.sock, "gone")
                return connected
            if children and deadline is not None and time.monotonic() >= deadline:
                signal_pids(descendants(self.me), signal.SIGKILL)  # again each round: what forked meanwhile

    def _reap(self, pid: int) -> bool:
        """Reap exited children (reporting the shell's status); whether any child is left."""
        while True:
            try:
                child, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if child == 0:
                return True
            if child == pid:
                send_line(self.sock, f"exit {status}")

    def _end(self, pid: int, grace: float, deadline: float | None) -> float | None:
        """Begin ending the tree (SIGTERM to all below); returns the SIGKILL deadline (an earlier one stands)."""
        if not has_children():
            return deadline  # no child, so nothing below: nothing to end
        new = time.monotonic() + max(grace, 0.0)
        if deadline is None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                pass
            signal_pids(descendants(self.me), signal.SIGTERM)
            return new
        return min(deadline, new)


def shim_main(sock_fd: int, close: tuple[int, ...]) -> None:
    """The body of a freshly forked shim."""
    for fd in close:
        os.close(fd)
    signal.set_wakeup_fd(-1)
    sock = _socket.socket(fileno=sock_fd)
    try:
        Shim(sock).serve()
    except BaseException:  # noqa: BLE001 - whatever happened, nothing of the command may outlive the shim
        signal_pids(descendants(os.getpid()), signal.SIGKILL)
        raise


# ---- the supervisor process -------------------------------------------------------
def main(argv: list[str]) -> int:
    """Fork a shim per request on the control socket; end what killed shims leave; exit once all are done."""
    grace = float(argv[1]) if len(argv) > 1 else 2.0
    ctl = _socket.socket(fileno=int(argv[2]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the control socket closing ends us
    set_subreaper()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    shims: set[int] = set()
    adopted: dict[int, float] = {}  # pid of an adopted orphan -> when to SIGKILL it
    closing_until: float | None = None
    me = os.getpid()
    while True:
        timeout = POLL * 4 if adopted or closing_until is not None else None
        ready, _, _ = select.select([wake_r] + ([ctl] if closing_until is None else []), [], [], timeout)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if ctl in ready:
            try:
                msg, fds = recv_fds(ctl, 16, 1)
            except OSError:
                msg, fds = b"", []
            if not msg:
                closing_until = time.monotonic() + grace + 5.0
            elif len(fds) == 1:
                pid = os.fork()
                if pid == 0:
                    code = 0
                    try:
                        shim_main(fds[0], (ctl.fileno(), wake_r, wake_w))
                    except BaseException:  # noqa: BLE001
                        code = 1
                    os._exit(code)
                shims.add(pid)
            for fd in fds:
                os.close(fd)
        rescan = False  # orphans may have come to us: below a killed shim, or below an orphan that ended
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in shims:
                shims.discard(pid)
                rescan = rescan or os.WIFSIGNALED(status)
            elif adopted.pop(pid, None) is not None:
                rescan = True
        if rescan or adopted or closing_until is not None:
            end_orphans(me, shims, adopted, grace)
        if closing_until is not None and (not has_children() or time.monotonic() > closing_until):
            return 0


def has_children() -> bool:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # looks, reaps nothing
        return True
    except ChildProcessError:
        return False


def end_orphans(me: int, shims: set[int], adopted: dict[int, float], grace: float) -> None:
    """Trees of killed shims came to us: SIGTERM them, SIGKILL them (and all below) after ``grace``."""
    table = snapshot()
    now = time.monotonic()
    for p in table:
        if p.ppid == me and p.pid not in shims and p.pid not in adopted and p.state != "Z":
            adopted[p.pid] = now + grace
            signal_pids([p.pid, *descendants(p.pid, table)], signal.SIGTERM)
    for pid, when in list(adopted.items()):
        if now >= when:
            signal_pids([pid, *descendants(pid, table)], signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
