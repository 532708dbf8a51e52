"""The child side of ``--process`` tasks: the worker process's loop.

A ``WorkerPool`` (``pool.py``) starts ``python -m ttasks_ipy.core.backends.process.worker_main FD``
in a session of its own; FD is the worker's end of a Unix socket pair. SIGINT
is ignored (the kernel's Interrupt button must never reach a worker), stdin is
``/dev/null`` (``input()`` fails at once), and between jobs file descriptors 1
and 2 point at ``/dev/null`` or at the pipes kept for the next job.

The messages, both ways, are in ``channel.py``.

Where a job's output ends. Everything the worker process wrote is in the
pipes before the reply is sent (the writes returned first), so the kernel,
reading the pipes after the reply until they are empty, has it all. What
else could still write there is a process the job started and left running,
or a thread it left: the worker is the subreaper of whatever the job starts
(``PR_SET_CHILD_SUBREAPER``, so an orphaned grandchild is still its child),
and after a job it reaps what ended and looks for children left running.
None left, and no threads: the reply says ``kept`` and the pipes serve the
next job (no new pipes, no descriptors to pass). Otherwise the worker
closes its ends (fds 1 and 2 go to ``/dev/null``) and the kernel reads the
job's pipes to end of file, as long as a short drain allows; the next job
gets fresh pipes.

The worker exits when the kernel's end of the socket closes (the kernel
exited or was killed) or on SIGTERM.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from ..remote import one_line, type_name
from .channel import Channel

#: at most one progress message per this many seconds (the latest wins)
PROGRESS_INTERVAL = 0.05


def _remote_traceback(e: BaseException, filename: str | None) -> str:
    """The traceback text from the body's first frame on (the worker's own frames left out)."""
    tb = e.__traceback__
    while tb is not None and filename is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb if tb is not None else e.__traceback__))


#: values the standard pickle sends as well as cloudpickle does (it is what loads them in the kernel too)
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})


def _pickle_result(value: Any, is_expression: bool) -> dict[str, Any]:
    if type(value) in _PLAIN:
        return {"op": "done", "value": pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)}
    import cloudpickle

    try:
        return {"op": "done", "value": cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)}
    except Exception as e:
        err: BaseException = e
    what, hint = f"the value is a {type_name(value)}", ""
    if not is_expression and isinstance(value, dict):
        for name, v in value.items():
            try:
                cloudpickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as inner:
                what, err = f"{name!r} is a {type_name(v)}", inner
                hint = ": choose the names to send back"
                break
    return {
        "op": "failed",
        "stage": "result",
        "message": f"the result cannot be sent back from the worker process: {what} ({one_line(err)}){hint}",
    }


class _WorkerEvents:
    """``JobEvents`` inside a worker: output goes to this job's pipes (fds 1 and 2), progress over the channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._pending: tuple[float | None, str | None] | None = None
        self._last_sent = 0.0

    def output(self, stream: str, text: str) -> None:
        f = sys.stderr if stream == "stderr" else sys.stdout
        f.write(text)
        f.flush()

    def progress(self, percent: float | None, message: str | None) -> None:
        """Coalesced to one message per ``PROGRESS_INTERVAL``; the latest always arrives (``flush``)."""
        with self._lock:
            self._pending = (percent, message)
            if time.monotonic() - self._last_sent < PROGRESS_INTERVAL:
                return
            self._send_locked()

    def placed(self, where: str | None, pid: int | None) -> None:
        """Where a job runs is known in the kernel already."""

    def finished(self, value: Any = None, error: BaseException | None = None) -> None:
        """The reply is sent by ``run_job``."""

    def flush(self) -> None:
        with self._lock:
            self._send_locked()

    def _send_locked(self) -> None:
        if self._pending is None:
            return
        percent, message = self._pending
        self._pending = None
        self._last_sent = time.monotonic()
        try:
            self._channel.send({"op": "progress", "percent": percent, "message": message})
        except OSError:
            pass


def _apply_changes(job: dict[str, Any]) -> None:
    """Take on the kernel's cwd, ``sys.path`` and environment where the job carries them."""
    if "cwd" in job:
        os.chdir(job["cwd"])
    if "path" in job:
        sys.path[:] = job["path"]
    if "env" in job:
        os.environ.clear()
        os.environ.update(job["env"])


def execute(channel: Channel, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job's runner in this process; returns the reply (never raises for the runner's errors)."""
    import cloudpickle

    from ...context import TaskContext

    try:
        _apply_changes(job)
    except OSError as e:
        return {"op": "failed", "stage": "input", "message": f"cannot enter the kernel's directory: {one_line(e)}"}
    try:
        runner = cloudpickle.loads(job["runner"])
    except Exception as e:
        return {"op": "failed", "stage": "input", "message": f"cannot receive the task in the worker process: "
                                                              f"{one_line(e)}"}
    events = _WorkerEvents(channel)
    ctx = TaskContext(job.get("label", ""), job.get("attempt", 1), events)  # type: ignore[arg-type]
    token = ctx.activate()
    try:
        value = runner.run(ctx)
    except BaseException as e:  # the body's own failure, whatever it is
        if type(e).__name__ == "SpecError" and getattr(e, "__module__", "").startswith("ttasks_ipy"):
            return {"op": "failed", "stage": "compile", "message": str(e)}
        try:
            exc_data: bytes | None = cloudpickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            exc_data = None
        return {
            "op": "error",
            "type": type_name(e),
            "message": str(e),
            "traceback": _remote_traceback(e, getattr(runner, "filename", None)),
            "exception": exc_data,
        }
    finally:
        ctx.deactivate(token)
        events.flush()
    return _pickle_result(value, getattr(runner, "is_expression", True))


def _flush_std() -> None:
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass


def _become_subreaper() -> bool:
    """Make this process the subreaper of what its jobs start (Linux); True if it is one now."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children_left() -> bool:
    """Reap the children that ended; True if any still runs (or cannot be told)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        except OSError:
            return True
        if pid == 0:
            return True


class Outputs:
    """Where fds 1 and 2 of this worker point: ``/dev/null``, or a pair of pipes to the kernel.

    ``keeping`` is off until the worker is a subreaper (after its first job,
    so that start-up pays nothing for it); until then, and whenever a job
    leaves children or threads running, every job gets fresh pipes.
    """

    def __init__(self, devnull: int) -> None:
        self.devnull = devnull
        #: our own copies of the pipes' write ends (non-inheritable), or None
        self.pipes: tuple[int, int] | None = None
        #: whether pipes may be kept: None until tried after the first job
        self.keeping: bool | None = None

    def take(self, fds: list[int]) -> bool:
        """Point fds 1 and 2 at this job's pipes (``fds`` fresh ones, else the kept ones); False if there are none."""
        if fds:
            self.drop()
            if len(fds) < 2:
                os.close(fds[0])
                return False
            out_fd, err_fd = fds[0], fds[1]
            for extra in fds[2:]:
                os.close(extra)
            os.set_inheritable(out_fd, False)
            os.set_inheritable(err_fd, False)
            self.pipes = (out_fd, err_fd)
        if self.pipes is None:
            return False
        os.dup2(self.pipes[0], 1)
        os.dup2(self.pipes[1], 2)
        return True

    def end_job(self, threads_left: bool) -> bool:
        """The job returned: keep the pipes for the next job if nothing else can write to them; True if kept."""
        pipes = self.pipes
        if pipes is not None and self.keeping and not threads_left and not _children_left():
            try:
                os.dup2(pipes[0], 1)  # whatever the job did to fds 1 and 2
                os.dup2(pipes[1], 2)
                return True
            except OSError:  # it closed our copies too
                pass
        self.drop()
        return False

    def drop(self) -> None:
        """Close this worker's ends of the pipes: the kernel sees end of file once the job's children let go."""
        os.dup2(self.devnull, 1)
        os.dup2(self.devnull, 2)
        if self.pipes is not None:
            for fd in self.pipes:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.pipes = None


#: the ``started`` frame, made once
_STARTED = pickle.dumps({"op": "started"}, protocol=pickle.HIGHEST_PROTOCOL)


def run_job(channel: Channel, job: dict[str, Any], fds: list[int], outputs: Outputs) -> None:
    """Put the job's pipes on fds 1 and 2, run it, keep or close the pipes, reply."""
    _flush_std()
    if not outputs.take(fds):
        channel.send({"op": "failed", "stage": "input", "message": "the job came without its output pipes",
                      "retire": True, "kept": False})
        return
    channel.send_frame(_STARTED)
    threads_before = set(threading.enumerate())
    try:
        reply = execute(channel, job)
    finally:
        _flush_std()
    # a thread the job left running would write into the next job's output: retire this worker
    left = any(t.is_alive() for t in threading.enumerate() if t not in threads_before)
    reply["retire"] = left
    reply["kept"] = outputs.end_job(left)
    channel.send(reply)


def main(argv: list[str]) -> int:
    """The worker's loop: announce readiness, then run jobs until the kernel closes the channel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(argv[1])
    os.set_inheritable(fd, False)  # children of a job must not hold the channel open
    channel = Channel(socket.socket(fileno=fd))
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (sys.stdout, sys.stderr):
        try:
            std.reconfigure(write_through=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass
    outputs = Outputs(devnull)
    outputs.drop()  # start-up errors went to the kernel's pipe; from here on, jobs own fd 2
    try:
        channel.send({"op": "ready", "pid": os.getpid()})
    except OSError:
        return 1
    while True:
        try:
            msg, fds = channel.recv()
        except (EOFError, OSError):
            return 0
        if msg.get("op") == "run":
            try:
                run_job(channel, msg, fds, outputs)
            except OSError:
                return 0  # the kernel went away while we replied
            if outputs.keeping is None:
                outputs.keeping = _become_subreaper()  # after the first job: start-up pays nothing for it
        else:
            for extra in fds:
                os.close(extra)
            if msg.get("op") == "exit":
                return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
