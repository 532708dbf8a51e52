"""A task's output: a bounded tail in memory and the whole in a file.

Text is kept as written, ``\\r`` included, so a view can rewrite a progress
line in place. Memory per task is bounded by ``tail_chars`` per stream; the
file stops growing at ``file_cap`` bytes (the tail keeps moving).

The file is a convenience, never a reason to fail: when it cannot be
created, written, flushed or read again (a full disk, a file-size limit, its
folder removed), that stream goes on in memory only and reads fall back to
its tail. ``lost`` then says what happened and what was kept, once, and a
warning goes to the ``"ttasks_ipy"`` logger; ``complete`` tells whether a
read still returns everything that was written.
"""
from __future__ import annotations

import codecs
import collections
import logging
import os
import selectors
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

STREAMS = ("stdout", "stderr")
log = logging.getLogger("ttasks_ipy")

#: what can go wrong with the file: the system's errors, and a write to a file closed under us
_FILE_ERRORS = (OSError, ValueError)


class _Stream:
    __slots__ = ("chunks", "size", "file", "has_file", "failed", "written", "truncated", "total")

    def __init__(self) -> None:
        self.chunks: collections.deque[str] = collections.deque()
        self.size = 0
        self.file: IO[str] | None = None
        self.has_file = False  # reads come from the file
        self.failed = False  # the file gave up: memory only from now on
        self.written = 0
        self.truncated = False
        self.total = 0


#: what a stream that received nothing reads as (never written)
_NOTHING = _Stream()


class TaskOutput:
    """Output of one task, both streams, safe to append from one thread and read from any."""

    def __init__(self, path: str | os.PathLike[str] | None, *, tail_chars: int = 65_536,
                 file_cap: int = 100 << 20):
        self._dir = None if path is None else os.fspath(path)
        self._path: Path | None = None
        self.tail_chars = tail_chars
        self.file_cap = file_cap
        self._lock = threading.Lock()
        # made on the first text (a task that prints nothing costs no more objects than this)
        self._streams: dict[str, _Stream] = {}
        #: the last lines of both streams in the order written: (stream, text) pieces (made on the first text)
        self._mixed: collections.deque[tuple[str, str]] | None = None
        self._mixed_size = 0
        self._lost: str | None = None

    @property
    def path(self) -> Path | None:
        """The folder of the output files (made when the first text arrives), or None."""
        if self._path is None and self._dir is not None:
            self._path = Path(self._dir)
        return self._path

    @property
    def folder(self) -> str | None:
        """``path`` as a string (cheap)."""
        return self._dir

    # ---- the file, which may fail at any step ---------------------------
    def _file_for(self, name: str, st: _Stream) -> IO[str] | None:
        """The open file of ``st`` (created on first use); None once the file gave up."""
        if st.file is None and not st.failed and not st.has_file and self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path / f"{name}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            st.file = os.fdopen(fd, "w", encoding="utf-8", errors="replace", newline="")
            st.has_file = True
        return st.file

    def _give_up(self, name: str, st: _Stream, error: BaseException) -> str | None:
        """Drop the file of ``st`` after ``error`` (under the lock); the warning to log, the first time only."""
        st.failed, st.has_file = True, False
        f, st.file = st.file, None
        if f is not None:
            try:
                f.close()
            except _FILE_ERRORS:
                pass  # what the buffer held is lost with the file; the tail has it
        if self._lost is not None:
            return None
        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        self._lost = f"output file ({name}): {why}; kept the last {self.tail_chars:,} characters in memory"
        where = self.path / f"{name}.txt" if self.path is not None else "?"
        return f"task output {where}: {why}; only the last {self.tail_chars:,} characters are kept (in memory)"

    @staticmethod
    def _warn(message: str | None) -> None:
        """Log outside the lock (a handler may route the record into this very output)."""
        if message:
            log.warning(message)

    # ---- writing ----------------------------------------------------------
    def append(self, stream: str, text: str) -> None:
        """Add ``text`` to ``stream`` ('stdout' or 'stderr'). Never raises for the file's sake."""
        if not text:
            return
        st = self._streams.get(stream)
        if st is None:
            if stream not in STREAMS:
                raise KeyError(stream)
            st = self._streams.setdefault(stream, _Stream())
        warning = None
        with self._lock:
            st.total += len(text)
            _push(st.chunks, text, self.tail_chars, st)
            mixed = self._mixed
            if mixed is None:
                mixed = self._mixed = collections.deque()
            mixed.append((stream, text))
            self._mixed_size += len(text)
            while self._mixed_size > self.tail_chars and len(mixed) > 1:
                self._mixed_size -= len(mixed.popleft()[1])
            if not st.failed and not st.truncated:
                try:
                    f = self._file_for(stream, st)
                    if f is not None:
                        room = self.file_cap - st.written
                        piece = text if len(text) <= room else text[:max(room, 0)]
                        f.write(piece)
                        st.written += len(piece)
                        if len(piece) < len(text):
                            st.truncated = True
                            f.write("\n[output truncated at the file cap]\n")
                        # no flush per write: read() and close() flush (a print loop stays cheap)
                except _FILE_ERRORS as e:
                    warning = self._give_up(stream, st, e)
        self._warn(warning)

    # ---- reading ----------------------------------------------------------
    def tail(self, stream: str = "stdout") -> str:
        """The last ``tail_chars`` characters of ``stream``."""
        with self._lock:
            return "".join(self._streams.get(stream, _NOTHING).chunks)[-self.tail_chars:]

    def tail_mixed(self) -> list[tuple[str, str]]:
        """The last pieces of both streams in the order written."""
        with self._lock:
            return list(self._mixed) if self._mixed is not None else []

    def read(self, stream: str = "stdout") -> str:
        """The whole of ``stream`` as kept: the file when there is one, else the tail (see ``complete``)."""
        if stream not in STREAMS:
            raise KeyError(stream)
        st = self._streams.get(stream, _NOTHING)
        warning = None
        with self._lock:
            if st.has_file and self.path is not None:
                try:
                    if st.file is not None:
                        st.file.flush()
                    with open(self.path / f"{stream}.txt", encoding="utf-8", errors="replace", newline="") as f:
                        return f.read()
                except _FILE_ERRORS as e:
                    warning = self._give_up(stream, st, e)
            text = "".join(st.chunks)
        self._warn(warning)
        return text

    def total_chars(self, stream: str = "stdout") -> int:
        """How many characters ``stream`` received in all."""
        return self._streams.get(stream, _NOTHING).total

    @property
    def lost(self) -> str | None:
        """Why the output file gave up and what was kept instead (None while it works)."""
        return self._lost

    @property
    def complete(self) -> bool:
        """True while ``read`` returns everything written (no lost file past the tail, no file cap reached)."""
        with self._lock:
            return not any(
                st.truncated or (st.failed and st.total > len("".join(st.chunks))) for st in self._streams.values()
            )

    # ---- ending -------------------------------------------------------------
    def clear(self) -> None:
        """Forget everything (a new attempt starts afresh, with a new file)."""
        with self._lock:
            for st in self._streams.values():
                if st.file is not None:
                    try:
                        st.file.close()
                    except _FILE_ERRORS:
                        pass  # the old attempt's output is being forgotten anyway
            self._streams = {}
            self._mixed = None
            self._mixed_size = 0
            self._lost = None

    def close(self) -> None:
        """Close the files; what was written stays readable (a file that fails to close falls back to the tail)."""
        warnings = []
        with self._lock:
            for name, st in self._streams.items():
                if st.file is not None:
                    try:
                        st.file.close()
                    except _FILE_ERRORS as e:
                        warnings.append(self._give_up(name, st, e))
                    st.file = None
        for w in warnings:
            self._warn(w)


def _push(chunks: collections.deque[str], text: str, cap: int, st: _Stream) -> None:
    if len(text) >= cap:
        chunks.clear()
        chunks.append(text[-cap:])
        st.size = cap
        return
    chunks.append(text)
    st.size += len(text)
    while st.size > cap and chunks:
        first = chunks[0]
        extra = st.size - cap
        if len(first) <= extra:
            chunks.popleft()
            st.size -= len(first)
        else:
            chunks[0] = first[extra:]
            st.size -= extra


class PipeDecoder:
    """Bytes read from a task's pipes, turned into text per stream without splitting a UTF-8 character.

    ``feed(stream, data)`` emits what decodes now; ``finish()`` emits what was
    held back at the end. Used by commands and worker processes alike.
    """

    def __init__(self, emit: Callable[[str, str], None]) -> None:
        self._emit = emit
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}  # made on a stream's first bytes

    def feed(self, stream: str, data: bytes) -> None:
        dec = self._decoders.get(stream)
        if dec is None:
            dec = self._decoders[stream] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = dec.decode(data)
        if text:
            self._emit(stream, text)

    def read_ready(self, sel: selectors.BaseSelector, key: selectors.SelectorKey) -> bool:
        """Read what the ready pipe of ``key`` holds into its stream (``key.data``).

        False once the pipe reached end of file (it is unregistered from ``sel`` then).
        """
        try:
            data = os.read(key.fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            sel.unregister(key.fileobj)
            return False
        self.feed(key.data, data)
        return True

    def finish(self) -> None:
        for stream, dec in self._decoders.items():
            tail = dec.decode(b"", final=True)
            if tail:
                self._emit(stream, tail)
