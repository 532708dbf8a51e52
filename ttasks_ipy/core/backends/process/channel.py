"""The channel between the kernel and one worker process: length-prefixed pickled frames over a Unix socket.

Wire protocol, both directions: frames of an 8-byte big-endian length and a
pickled ``dict`` with an ``op`` key.

kernel -> worker
    ``run``: ``runner`` (the job's runner, pickled by ``pickle_runner``: it
    runs here with a ``TaskContext`` whose progress goes over the channel),
    ``label``, ``attempt``, and where they changed since the last job:
    ``cwd``, ``path`` (``sys.path``), ``env``. Two file descriptors may ride
    on the frame (``SCM_RIGHTS``, header and body in one ``sendmsg``): the
    write ends of a fresh stdout and stderr pipe. The worker puts them on fds
    1 and 2, so ``print``, C code and ``os.system`` are all captured. A ``run``
    frame without descriptors reuses the pipes the worker kept from its last
    job (``kept``: see ``worker_main.py``).

worker -> kernel
    ``ready`` (once, after start-up), ``started`` (the job arrived: from here
    on, a death is the job's), ``progress`` (``percent``, ``message``;
    coalesced to at most one per 50 ms, the last one always sent), then one
    reply per job: ``done`` (``value``: cloudpickled), ``error`` (``type``,
    ``message``, ``traceback`` text with the body's own line numbers,
    ``exception``: cloudpickled or None) or ``failed`` (``stage``: 'input',
    'compile' or 'result'; ``message``: one line). Every reply has ``retire``:
    True when the job left threads running (they could write into the next
    job's output), and the kernel then replaces this worker; and ``kept``.

"""
from __future__ import annotations

import pickle
import socket
import struct
import threading
from typing import Any

HEADER = struct.Struct(">Q")


class Channel:
    """Length-prefixed pickled frames over a stream socket; ``send`` is thread-safe."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, msg: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        """Send one frame, with ``fds`` attached to its header. Raises ``OSError`` if the peer is gone."""
        self.send_frame(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL), fds)

    def send_frame(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Send one frame already pickled (``data``), with ``fds`` attached to its header."""
        header = HEADER.pack(len(data))
        with self._send_lock:  # one sendmsg for header and body: the peer wakes once, not twice
            if fds:
                sent = socket.send_fds(self.sock, [header, data], list(fds))
            else:
                sent = self.sock.sendmsg([header, data])
            if sent < len(header):
                self.sock.sendall(header[sent:])
                sent = len(header)
            if sent < len(header) + len(data):
                with memoryview(data) as view:
                    self.sock.sendall(view[sent - len(header):])

    def recv(self) -> tuple[dict[str, Any], list[int]]:
        """Block for one frame; returns it with any attached fds. Raises ``EOFError`` when the peer closed."""
        header, fds, _flags, _addr = socket.recv_fds(self.sock, HEADER.size, 4)
        if not header:
            raise EOFError("the kernel closed the channel")
        if len(header) < HEADER.size:
            header += self._exact(HEADER.size - len(header))
        (n,) = HEADER.unpack(header)
        return pickle.loads(self._exact(n)), fds

    def _exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        got = 0
        with memoryview(buf) as view:
            while got < n:
                k = self.sock.recv_into(view[got:])
                if not k:
                    raise EOFError("the kernel closed the channel mid-frame")
                got += k
        return buf


class FrameReader:
    """Incremental parser for the kernel side, fed whatever ``recv`` returned."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add ``data``; return the frames now complete."""
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self._buf)
            end = HEADER.size + n
            if len(self._buf) < end:
                break
            with memoryview(self._buf) as whole, whole[HEADER.size:end] as frame:
                out.append(pickle.loads(frame))
            del self._buf[:end]
        return out


__all__ = ["HEADER", "Channel", "FrameReader"]
