"""Detached commands: processes that outlive the kernel, and the runner that follows them.

A detached command runs under a tiny bash wrapper in a session of its own,
with no mark of the kernel and no registration with the reaper, so nothing
ends it when the kernel goes. Its output goes straight into the ledger's
output folder of the task (``stdout.txt``, ``stderr.txt``); when it ends the
wrapper writes its exit status to ``exit`` (through a rename, so a reader never
sees half of it). The ledger keeps its pid and the pid's start time: a pid is
trusted (followed, signalled) only while a process with that pid has that
start time, so a recycled pid is never killed.

``DetachedRunner`` is the task that shows one: it starts the command (or, for
one found again after a restart, only follows it), streams the files as they
grow, and ends with the command's ``CommandResult``. Cancelling it ends the
command's whole session; ``release()`` (the kernel shutting down) lets go of
it without ending it.
"""
from __future__ import annotations

import codecs
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..context import TaskContext
from ..errors import CommandFailed, TaskCancelled
from ..procs import describe_exit
from ..proctable import MARK_VAR, proc_info, session_members, signal_pids
from ..runners.bash import CommandResult
from ..spec import Runner

#: the wrapper: run the command with its output in the folder, then write its exit status atomically
WRAPPER = ('bash -c "$1" </dev/null >>"$2/stdout.txt" 2>>"$2/stderr.txt"; s=$?; '
           'printf "%s\\n" "$s" >"$2/exit.tmp" && mv -f "$2/exit.tmp" "$2/exit"')
#: how often a followed command's files and process are looked at
POLL = 0.1


def trusted(pid: int | None, start: int | None) -> bool:
    """Whether ``pid`` is still the process that had start time ``start`` (alive, not a zombie)."""
    if pid is None or start is None:
        return False
    info = proc_info(pid)
    return info is not None and info.start == start and info.state != "Z"


def end_session(pid: int, start: int, grace: float) -> bool:
    """SIGTERM the detached command's session, SIGKILL what is left after ``grace`` (on a thread).

    Nothing is signalled unless ``pid`` still has start time ``start``; returns whether it was.
    """
    if not trusted(pid, start):
        return False
    members = session_members(pid)  # the wrapper leads its session: its sid is its pid
    signal_pids(members, signal.SIGTERM)

    def later() -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not [m for m in members if proc_info(m) is not None and proc_info(m).state != "Z"]:
                return
            time.sleep(0.05)
        left = [m for m in session_members(pid) if m in members]  # only the very processes seen above
        signal_pids(left, signal.SIGKILL)

    threading.Thread(target=later, name="ttasks-detached-kill", daemon=True).start()
    return True


def read_exit(folder: Path) -> int | None:
    """The exit status the wrapper wrote, or None while there is none."""
    try:
        return int((folder / "exit").read_text().strip())
    except (OSError, ValueError):
        return None


class DetachedRunner(Runner):
    """Starts (or follows again) a command that outlives the kernel. ``kind`` is 'bash'."""

    kind = "bash"
    needs_worker_slot = False  # it runs in a process of its own: it waits, it does not compute
    detached = True

    def __init__(
        self,
        command: str,
        *,
        folder_for: Callable[[int], Path] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        grace: float = 2.0,
        on_launch: Callable[[DetachedRunner], None] | None = None,
        found: tuple[str, int, int] | None = None,
    ) -> None:
        """``folder_for(task_id)`` gives the folder of a new command; ``found`` = (folder, pid, start) of one
        started by an earlier kernel. ``on_launch(runner)`` is called once its pid is known."""
        self.command = command
        self.env = dict(env or {})
        self.cwd = cwd
        self.grace = grace
        self._folder_for = folder_for
        self._on_launch = on_launch
        self._popen: subprocess.Popen[bytes] | None = None
        self.folder: str | None = None
        self.pid: int | None = None
        self.pid_start: int | None = None
        self.released = False
        self._launching = threading.Lock()  # a release and a launch never cross: released first, never started
        if found is not None:
            self.folder, self.pid, self.pid_start = found

    def describe(self) -> str:
        return "!" + self.command

    def release(self) -> None:
        """Stop following without ending the command (the kernel is going; a later one finds it again).

        A command not started yet is not started any more; one started has been announced (``on_launch``).
        """
        with self._launching:
            self.released = True

    def _launch(self, task_id: int) -> None:
        if self._folder_for is None:
            raise RuntimeError("a detached command needs a folder to write its output to")
        folder = self._folder_for(task_id)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env.pop(MARK_VAR, None)  # not one of the kernel's processes: the reaper leaves it alone
        for name in ("stdout.txt", "stderr.txt"):
            os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        self._popen = subprocess.Popen(
            ["bash", "-c", WRAPPER, "ttasks-detached", self.command, str(folder)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.cwd, env=env, start_new_session=True, close_fds=True,
        )
        self.folder = str(folder)
        self.pid = self._popen.pid
        info = proc_info(self.pid)
        self.pid_start = info.start if info is not None else None
        if self._on_launch is not None:
            self._on_launch(self)

    def _gone(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is not None
        return not trusted(self.pid, self.pid_start)

    def _abort(self) -> None:
        if self.released or self.pid is None or self.pid_start is None:
            return
        end_session(self.pid, self.pid_start, self.grace)

    def run(self, ctx: TaskContext) -> CommandResult:
        started = time.monotonic()
        with self._launching:
            if self.pid is None:
                if self.released:
                    raise TaskCancelled("the kernel shut down before it started")
                ctx.check()
                self._launch(ctx.task_id or 0)
        assert self.folder is not None
        folder = Path(self.folder)
        # no pid for the engine: it ends the process trees of its tasks at shutdown, and this one outlives it
        ctx.placed(None, f"pid {self.pid} (detached)")
        unregister = ctx.on_cancel(self._abort)
        follow = _Follower(folder, ctx.output)
        try:
            while True:
                follow.pump()
                code = read_exit(folder)
                if code is None and self._gone():
                    code = read_exit(folder)  # written just before the wrapper exited
                    if code is None:
                        break
                if code is not None:
                    follow.pump()
                    break
                if ctx.wait_cancelled(POLL):
                    break
            follow.finish()
        finally:
            unregister()
        if ctx.cancelled:
            raise TaskCancelled("cancelled" if not self.released else "no longer followed")
        result = CommandResult(self.command, returncode=-1 if code is None else code,
                               duration=time.monotonic() - started, source=ctx.store)
        if code is None:
            raise CommandFailed("ended without an exit status (killed, or its folder was removed)", result)
        if code != 0:
            raise CommandFailed(describe_exit(code), result)
        return result

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_popen"] = state["_launching"] = None
        return state


class _Follower:
    """Reads what a detached command appended to its two files since the last look."""

    def __init__(self, folder: Path, emit: Callable[[str, str], None]) -> None:
        self.emit = emit
        self.files = {s: folder / f"{s}.txt" for s in ("stdout", "stderr")}
        self.offsets = dict.fromkeys(self.files, 0)
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in self.files}

    def pump(self) -> None:
        for stream, path in self.files.items():
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[stream])
                    data = f.read(1 << 20)
            except OSError:
                continue
            if data:
                self.offsets[stream] += len(data)
                text = self.decoders[stream].decode(data)
                if text:
                    self.emit(stream, text)

    def finish(self) -> None:
        for stream, dec in self.decoders.items():
            text = dec.decode(b"", final=True)
            if text:
                self.emit(stream, text)


__all__ = ["WRAPPER", "DetachedRunner", "end_session", "read_exit", "trusted"]
