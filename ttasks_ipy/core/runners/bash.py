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
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..context import TaskContext
from ..errors import CommandFailed, TaskCancelled
from ..output import PipeDecoder, TaskOutput
from ..procs import describe_exit
from ..spec import Runner
from ..supervisor import ContainedProcess, Supervisor

#: how long to keep reading the pipes after the shell exited
DRAIN_SECONDS = 0.25


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

    def materialize(self) -> tuple[str, str]:
        """Read the output into the result now (before the task's files change, e.g. on a rerun)."""
        if self._texts is None:
            src = self._source
            self._texts = (src.read("stdout"), src.read("stderr")) if src is not None else ("", "")
        return self._texts

    @property
    def output(self) -> str:
        """The command's stdout (as kept: up to the file cap)."""
        return self.materialize()[0]

    @property
    def stderr(self) -> str:
        """The command's stderr (as kept: up to the file cap)."""
        return self.materialize()[1]

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


class BashRunner(Runner):
    """Runs a bash command; a non-zero exit fails the task but keeps its ``CommandResult``."""

    kind = "bash"

    def __init__(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        grace: float | None = None,
        shell: str = "bash",
    ) -> None:
        self.command = command
        self.env = dict(env or {})
        self.cwd = cwd
        self.grace = grace
        self.shell = shell

    def describe(self) -> str:
        return "!" + self.command

    def run(self, ctx: TaskContext) -> CommandResult:
        services = ctx.services
        supervisor = services.supervisor if services is not None else _local_supervisor()
        grace = self.grace if self.grace is not None else (services.grace if services is not None else 2.0)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        if services is not None:
            env = services.reaper.mark(env)  # the reaper ends it if the kernel dies, from its fork on
        started = time.monotonic()
        ctx.check()
        # under a subreaper of its own: what leaves the session is still ended with it
        proc = supervisor.spawn([self.shell, "-c", "--", self.command], env=env, cwd=self.cwd, grace=grace)
        ctx.placed(proc.pid)
        # from here a cancel ends the tree (at once if it came while the process started)
        unregister = ctx.on_cancel(lambda: proc.terminate(grace))
        kept: dict[str, list[str]] | None = None if ctx.store is not None else {"stdout": [], "stderr": []}
        try:
            _pump(proc, ctx.output if kept is None else _collecting(ctx.output, kept))
        finally:
            unregister()
            proc.close()  # ends whatever the command left behind (a backgrounded grandchild), after the grace
        duration = time.monotonic() - started
        if kept is None:
            result = CommandResult(self.command, returncode=proc.returncode, duration=duration, source=ctx.store)
        else:  # away from the kernel: the result carries its own text
            result = CommandResult(self.command, "".join(kept["stdout"]), "".join(kept["stderr"]),
                                   proc.returncode, duration)
        if ctx.cancelled:
            raise TaskCancelled("cancelled")
        if proc.returncode != 0:
            raise CommandFailed(describe_exit(proc.returncode), result)
        return result


def _collecting(emit: Callable[[str, str], None], kept: dict[str, list[str]]) -> Callable[[str, str], None]:
    def both(stream: str, text: str) -> None:
        kept[stream].append(text)
        emit(stream, text)

    return both


_supervisor: Supervisor | None = None


def _local_supervisor() -> Supervisor:
    """A supervisor for commands run where no engine lends one (a worker process, a script)."""
    global _supervisor
    if _supervisor is None:
        _supervisor = Supervisor(2.0)
        _supervisor.start()
    return _supervisor


def _pump(proc: ContainedProcess, emit: Callable[[str, str], None]) -> None:
    """Read both pipes until the shell exits (and a short drain after), reaping it."""
    sel = selectors.DefaultSelector()
    decoders = PipeDecoder(emit)
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
                if not decoders.read_ready(sel, key):
                    open_pipes -= 1
        decoders.finish()
    finally:
        sel.close()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
        proc.wait()
