"""Bash tasks: a command in its own session, output streamed as it comes.

The command runs as ``bash -c`` in a new session (so the kernel's Interrupt
never reaches it and its whole tree can be ended), stdin from /dev/null,
``PYTHONUNBUFFERED=1``. Both pipes are read incrementally with an incremental
UTF-8 decoder; ``\\r`` is kept. When the shell exits, what is already in the
pipes is drained for a short while, then whatever the command left running in
the background is ended: a grandchild holding the pipe open cannot keep the
task running.
"""
from __future__ import annotations

import os
import selectors
import signal
import time
from collections.abc import Mapping
from typing import Any

from .context import RunContext
from .errors import CommandFailed, TaskCancelled
from .output import PipeDecoder, TaskOutput
from .spec import Runner
from .supervisor import ContainedProcess

#: how long to keep reading the pipes after the shell exited
DRAIN_SECONDS = 0.25
_SIGNAMES = {s.value: s.name for s in signal.Signals}


class CommandResult:
    """What a command left behind: ``str()`` is its stdout.

    ``output`` and ``stderr`` are read from the task's output files on first
    access (so a task that printed 200 MB holds no copy in memory until asked).
    """

    __slots__ = ("command", "returncode", "duration", "_source", "_texts")

    def __init__(
        self,
        command: str,
        output: str | None = None,
        stderr: str | None = None,
        returncode: int = 0,
        duration: float = 0.0,
        *,
        source: TaskOutput | None = None,
    ) -> None:
        self.command = command
        self.returncode = returncode
        self.duration = duration
        self._source = source
        self._texts = None if output is None else (output, stderr or "")

    def _read(self) -> tuple[str, str]:
        if self._texts is None:
            src = self._source
            self._texts = (src.read("stdout"), src.read("stderr")) if src is not None else ("", "")
        return self._texts

    @property
    def output(self) -> str:
        """The command's stdout (as kept: up to the file cap)."""
        return self._read()[0]

    @property
    def stderr(self) -> str:
        """The command's stderr (as kept: up to the file cap)."""
        return self._read()[1]

    @property
    def ok(self) -> bool:
        """True when it exited with status 0."""
        return self.returncode == 0

    def __str__(self) -> str:
        return self.output

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CommandResult):
            return NotImplemented
        return (self.command, self.output, self.stderr, self.returncode) == (
            other.command, other.output, other.stderr, other.returncode)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (CommandResult, (self.command, self.output, self.stderr, self.returncode, self.duration))

    def __repr__(self) -> str:
        if self._texts is None and self._source is not None:  # never load a whole output to show 60 characters
            tail = self._source.tail("stdout")
            out = tail[:61] if self._source.total_chars("stdout") <= len(tail) else "..." + tail[-57:]
        else:
            out = self.output[:61]
        out = out if len(out) <= 60 else out[:57] + "..."
        return f"CommandResult(returncode={self.returncode}, duration={self.duration:.2f}, output={out!r})"

    def _repr_pretty_(self, p, cycle) -> None:  # noqa: ANN001 - IPython's protocol
        p.text(repr(self))


def describe_exit(returncode: int) -> str:
    """'exit status 2' or 'killed by SIGTERM'."""
    if returncode < 0:
        return f"killed by {_SIGNAMES.get(-returncode, -returncode)}"
    return f"exit status {returncode}"


class BashRunner(Runner):
    """Runs a bash command; a non-zero exit fails the task but keeps its ``CommandResult``."""

    kind = "bash"

    def __init__(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        grace: float = 2.0,
        shell: str = "bash",
    ) -> None:
        self.command = command
        self.env = dict(env or {})
        self.cwd = cwd
        self.grace = grace
        self.shell = shell

    def describe(self) -> str:
        return "!" + self.command

    def run(self, ctx: RunContext) -> CommandResult:
        executor = ctx.task._executor
        env = executor.reaper.mark({**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        started = time.monotonic()
        with ctx.lock:
            if ctx.cancelled:
                raise TaskCancelled("cancelled before start")
            # under a subreaper of its own: what leaves the session is still ended with it
            proc = executor.supervisor.spawn([self.shell, "-c", self.command], env=env, cwd=self.cwd,
                                             grace=self.grace)
            ctx.handle = proc
            ctx.sid = proc.pid
            ctx.task.pid = proc.pid
        try:
            _pump(proc, ctx)
        finally:
            proc.close()  # ends whatever the command left behind (a backgrounded grandchild), after the grace
        duration = time.monotonic() - started
        result = CommandResult(self.command, returncode=proc.returncode, duration=duration,
                               source=ctx.task.output_buffer)
        if ctx.cancelled:
            raise TaskCancelled("cancelled")
        if proc.returncode != 0:
            raise CommandFailed(describe_exit(proc.returncode), result)
        return result

    def cancel(self, ctx: RunContext) -> None:
        with ctx.lock:
            proc = ctx.handle
        if proc is not None:
            proc.terminate(self.grace)


def _pump(proc: ContainedProcess, ctx: RunContext) -> None:
    """Read both pipes until the shell exits (and a short drain after), reaping it."""
    sel = selectors.DefaultSelector()
    decoders = PipeDecoder(ctx.output)
    for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        assert pipe is not None
        os.set_blocking(pipe.fileno(), False)
        sel.register(pipe, selectors.EVENT_READ, stream)
    sel.register(proc, selectors.EVENT_READ, "exit")  # readable when the exit status comes
    open_pipes = 2
    drain_until = None
    try:
        while open_pipes:
            if drain_until is None and proc.poll() is not None:  # before blocking: the exit may be known already
                drain_until = time.monotonic() + DRAIN_SECONDS
            if drain_until is None:
                timeout = None
            else:
                timeout = drain_until - time.monotonic()
                if timeout <= 0:
                    break
            events = sel.select(timeout)
            for key, _ in events:
                if key.data == "exit":
                    if proc.poll() is not None:
                        sel.unregister(key.fileobj)
                    continue
                try:
                    data = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                decoders.feed(key.data, data)
        decoders.finish()
    finally:
        sel.close()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
        proc.wait()
