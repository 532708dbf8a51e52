"""A task's output: a bounded tail in memory and the whole in a file.

Text is kept as written, ``\\r`` included, so a view can rewrite a progress
line in place. Memory per task is bounded by ``tail_chars`` per stream; the
file stops growing at ``file_cap`` bytes (the tail keeps moving).
"""
from __future__ import annotations

import codecs
import collections
import os
import threading
from collections.abc import Callable
from pathlib import Path

STREAMS = ("stdout", "stderr")


class _Stream:
    __slots__ = ("chunks", "size", "file", "has_file", "written", "truncated", "total")

    def __init__(self) -> None:
        self.chunks: collections.deque[str] = collections.deque()
        self.size = 0
        self.file = None
        self.has_file = False
        self.written = 0
        self.truncated = False
        self.total = 0


class TaskOutput:
    """Output of one task, both streams, safe to append from one thread and read from any."""

    def __init__(self, path: str | os.PathLike[str] | None, *, tail_chars: int = 65_536,
                 file_cap: int = 100 << 20):
        self._dir = None if path is None else os.fspath(path)
        self._path: Path | None = None
        self.tail_chars = tail_chars
        self.file_cap = file_cap
        self._lock = threading.Lock()
        self._streams = {name: _Stream() for name in STREAMS}
        #: the last lines of both streams in the order written: (stream, text) pieces
        self._mixed: collections.deque[tuple[str, str]] = collections.deque()
        self._mixed_size = 0

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

    def _file_for(self, name: str, st: _Stream):
        if st.file is None and self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path / f"{name}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            st.file = os.fdopen(fd, "w", encoding="utf-8", errors="replace", newline="")
            st.has_file = True
        return st.file

    def append(self, stream: str, text: str) -> None:
        """Add ``text`` to ``stream`` ('stdout' or 'stderr')."""
        if not text:
            return
        st = self._streams[stream]
        with self._lock:
            st.total += len(text)
            _push(st.chunks, text, self.tail_chars, st)
            self._mixed.append((stream, text))
            self._mixed_size += len(text)
            while self._mixed_size > self.tail_chars and len(self._mixed) > 1:
                self._mixed_size -= len(self._mixed.popleft()[1])
            f = self._file_for(stream, st) if not st.has_file else st.file
            if f is not None and not st.truncated:
                room = self.file_cap - st.written
                piece = text if len(text) <= room else text[:max(room, 0)]
                f.write(piece)
                st.written += len(piece)
                if len(piece) < len(text):
                    st.truncated = True
                    f.write("\n[output truncated at the file cap]\n")
                # no flush per write: read() and close() flush (a print loop stays cheap)

    def tail(self, stream: str = "stdout") -> str:
        """The last ``tail_chars`` characters of ``stream``."""
        with self._lock:
            return "".join(self._streams[stream].chunks)[-self.tail_chars:]

    def tail_mixed(self) -> list[tuple[str, str]]:
        """The last pieces of both streams in the order written."""
        with self._lock:
            return list(self._mixed)

    def read(self, stream: str = "stdout") -> str:
        """The whole of ``stream`` as kept (the file when there is one, else the tail)."""
        st = self._streams[stream]
        with self._lock:
            if st.has_file:
                if st.file is not None:
                    st.file.flush()
                with open(self.path / f"{stream}.txt", encoding="utf-8", errors="replace", newline="") as f:
                    return f.read()
            return "".join(st.chunks)

    def total_chars(self, stream: str = "stdout") -> int:
        """How many characters ``stream`` received in all."""
        return self._streams[stream].total

    def clear(self) -> None:
        """Forget everything (a new attempt starts afresh)."""
        with self._lock:
            for name, st in self._streams.items():
                if st.file is not None:
                    st.file.close()
                self._streams[name] = _Stream()
            self._mixed.clear()
            self._mixed_size = 0

    def close(self) -> None:
        """Close the files; what was written stays readable."""
        with self._lock:
            for st in self._streams.values():
                if st.file is not None:
                    st.file.close()
                    st.file = None


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
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in STREAMS}

    def feed(self, stream: str, data: bytes) -> None:
        text = self._decoders[stream].decode(data)
        if text:
            self._emit(stream, text)

    def finish(self) -> None:
        for stream, dec in self._decoders.items():
            tail = dec.decode(b"", final=True)
            if tail:
                self._emit(stream, tail)
