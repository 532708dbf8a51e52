"""Our worker processes: ``WorkerPool`` and ``WorkerProcess`` (the kernel's handle on one worker).

Why ``subprocess.Popen`` and not ``multiprocessing``: a kernel is threaded, so
forking it is unsafe; ``Popen`` execs a fresh interpreter straight after the
fork (in C, no Python code in between), starts it in a session of its own
(``start_new_session``: the kernel's Interrupt, sent to the kernel's process
group, never reaches a worker, and cancel ends the worker's whole tree), and
gives us plain descriptors to pass: one Unix socket per worker for messages,
and a stdout and stderr pipe sent over that socket (fresh, or kept from the
worker's last job when that job left nothing running), so output written by
C code and ``os.system`` is captured too and ends exactly at the job boundary
(``worker_main.py`` says how). ``concurrent.futures.ProcessPoolExecutor`` is not used:
killing one of its workers breaks every task of the pool.

Pool state, in prose: a worker is either idle (in ``_idle``, most recently
used last) or busy (in ``_busy``, held by one job). ``take`` returns an idle
live worker, or starts one while fewer than ``size`` exist, or None (it never
waits: the ``Pump`` keeps the job until a worker is given back; the jobs
themselves are followed there, in ``pump.py``). ``release`` puts a healthy worker
back; a dead or killed one is discarded, its session ended and forgotten by
the reaper, and a fresh worker is started in its place, so the next task does
not pay the start-up. Only the task that was running on a dead worker fails
(``WorkerDied``).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ...errors import SpecError, WorkerDied
from ...procs import describe_exit, signal_tree, terminate_tree, tree_alive
from ...reaper import Reaper
from ...timers import Timers
from .channel import Channel, FrameReader

log = logging.getLogger("ttasks_ipy")

#: how long to wait for a worker's exit status once its channel closed (it is exiting then)
DEATH_SECONDS = 0.5


# ---- one worker process --------------------------------------------------
def _package_parent() -> str:
    """The folder holding the ``ttasks_ipy`` package (put on the worker's ``PYTHONPATH``)."""
    here = os.path.abspath(__file__)
    return here[: here.rindex(os.sep + "ttasks_ipy" + os.sep)]


class WorkerProcess:
    """The kernel's handle on one worker process: its ``Popen``, channel and health."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = _package_parent()
        extra = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": root + (os.pathsep + extra if extra else ""),
            "PYTHONUNBUFFERED": "1",
        }
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                [pool.python, "-m", "ttasks_ipy.core.backends.process.worker_main", str(child.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,  # start-up errors only; the worker closes it when ready
                pass_fds=(child.fileno(),),
                start_new_session=True,
                close_fds=True,
                cwd=root,  # `-m` puts the cwd first on sys.path: never the user's directory
                env=env,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.spawned = started
        self.pid = self.proc.pid
        self.channel = Channel(parent)
        #: the frames read from the channel so far (read by the ``Pump`` only)
        self.reader = FrameReader()
        #: set once the worker said it is ready
        self.ready = False
        #: seconds from ``Popen`` to the ready message (None until then)
        self.startup: float | None = None
        #: set when the worker must not be reused (killed, died, recycled)
        self.broken = False
        self.jobs = 0
        #: the current job reached the worker (a death before that is not the job's fault)
        self.job_started = False
        self._gone = False
        #: what the kernel last sent this worker (cwd, path, env), so that a job carries only changes
        self.sent: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "broken" if self.broken else ("ready" if self.ready else "starting")
        return f"<WorkerProcess pid={self.pid} {state} jobs={self.jobs}>"

    def alive(self) -> bool:
        """True while the process runs and may take a job."""
        return not self.broken and self.proc.poll() is None

    def kill(self) -> None:
        """End the worker's whole session: SIGTERM now, SIGKILL after the grace period; returns at once."""
        self.broken = True
        pool = self._pool
        terminate_tree(self.pid, pool.grace, pool.timers, self._forget)

    def _forget(self) -> None:
        """Tell the reaper the session ended (not if the reaper is already closed: that would restart it)."""
        if not self._gone:
            self._gone = True
            reaper = self._pool.reaper
            if reaper.pid is not None:
                reaper.forget(self.pid)

    def close(self) -> None:
        """Release the kernel's end of the channel (the worker exits on its own when idle)."""
        try:
            self.channel.sock.close()
        except OSError:
            pass
        if self.proc.stderr is not None:
            try:
                self.proc.stderr.close()
            except OSError:
                pass

    def mark_ready(self) -> None:
        """The worker said it is ready: its start-up time is known and its start-up pipe is closed."""
        self.ready = True
        self.startup = time.monotonic() - self.spawned
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def death(self) -> WorkerDied:
        """The error for a worker whose channel closed mid-job (reaps it: its channel closes as it exits)."""
        self.broken = True
        before = not self.job_started
        try:
            code = self.proc.wait(timeout=DEATH_SECONDS)
        except subprocess.TimeoutExpired:
            return WorkerDied(f"lost contact with worker process {self.pid} while it ran the task", before)
        if not self.ready:
            detail = ""
            if self.proc.stderr is not None and not self.proc.stderr.closed:
                try:
                    os.set_blocking(self.proc.stderr.fileno(), False)
                    err = (self.proc.stderr.read() or b"").decode("utf-8", "replace").strip()
                except (OSError, ValueError):
                    err = ""
                if err:
                    detail = ": " + err.splitlines()[-1]
            return WorkerDied(f"worker process {self.pid} failed to start ({describe_exit(code)}){detail}", before)
        if before:
            how = describe_exit(code)
            return WorkerDied(f"worker process {self.pid} died before the task reached it ({how})", True)
        return WorkerDied(f"worker process {self.pid} died while running the task ({describe_exit(code)})")


# ---- the pool --------------------------------------------------------------
@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a ``WorkerPool``."""

    size: int
    idle: int
    busy: int
    #: workers started since the pool was made
    started: int
    #: workers discarded because they died, were killed or recycled
    replaced: int
    #: the last measured start-up time (Popen to ready), seconds
    last_startup: float | None


class WorkerPool:
    """Worker processes for ``--process`` tasks: at most ``size`` at once, started on demand and reused.

    ``grace`` is the SIGTERM-to-SIGKILL delay on cancel. Each worker's session
    is registered with ``reaper`` (the executor's, so workers end when the
    kernel is killed; a private one when None) and ended with ``timers`` (a
    private ``Timers`` when None). ``acquire_timeout`` bounds how long a job
    waits for a free worker when all ``size`` are busy; ``python`` is the interpreter
    (default: the kernel's). ``shutdown()`` ends them all; the executor's
    shutdown also ends them (its reaper does), so the order does not matter.
    """

    def __init__(
        self,
        size: int,
        *,
        grace: float = 2.0,
        reaper: Reaper | None = None,
        timers: Timers | None = None,
        acquire_timeout: float = 600.0,
        python: str | None = None,
    ) -> None:
        if not isinstance(size, int) or size < 1:
            raise SpecError(f"a worker pool needs size >= 1, not {size!r}")
        self.size = size
        self.grace = grace
        self.acquire_timeout = acquire_timeout
        self.python = python or sys.executable
        self._own_reaper = reaper is None
        self.reaper = reaper or Reaper(grace)
        self._own_timers = timers is None
        self.timers = timers or Timers("ttasks-workers")
        self._lock = threading.Lock()
        self._idle: list[WorkerProcess] = []
        self._busy: set[WorkerProcess] = set()
        self._starting = 0  # slots reserved by a spawn in progress
        self._started = 0
        self._replaced = 0
        self._last_startup: float | None = None
        self._closed = False

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<WorkerPool size={s.size} idle={s.idle} busy={s.busy}>"

    # ---- starting -------------------------------------------------------
    def _spawn(self) -> WorkerProcess:
        w = WorkerProcess(self)
        self.reaper.register(w.pid)
        with self._lock:
            self._started += 1
        return w

    def prestart(self, n: int | None = None) -> None:
        """Start workers now (up to ``n``, default ``size``) without waiting for them to be ready."""
        want = min(self.size, self.size if n is None else n)
        while True:
            with self._lock:
                if self._closed or len(self._idle) + len(self._busy) + self._starting >= want:
                    return
                self._starting += 1
            try:
                w = self._spawn()
            finally:
                with self._lock:
                    self._starting -= 1
            with self._lock:
                closed = self._closed
                if not closed:
                    self._idle.insert(0, w)  # least recently used end: warm workers are taken first
            if closed:
                self._discard(w)
                return

    def resize(self, size: int) -> None:
        """Change the number of workers allowed (follow the executor's ``max_workers``)."""
        if size < 1:
            raise SpecError(f"a worker pool needs size >= 1, not {size!r}")
        with self._lock:
            self.size = size
            surplus = self._idle[: max(0, len(self._idle) + len(self._busy) - size)]
            del self._idle[: len(surplus)]
        for w in surplus:
            self._discard(w)

    # ---- using ------------------------------------------------------------
    def take(self) -> WorkerProcess | None:
        """An idle live worker, or a new one (maybe still starting) while fewer than ``size`` exist; else None.

        Never waits. Raises ``WorkerDied`` once the pool is shut down, ``OSError`` if a worker cannot start.
        """
        dead: list[WorkerProcess] = []
        try:
            with self._lock:
                if self._closed:
                    raise WorkerDied("the worker pool is shut down")
                while self._idle:
                    w = self._idle.pop()
                    if w.alive():
                        self._busy.add(w)
                        return w
                    dead.append(w)
                if len(self._busy) + self._starting >= self.size:
                    return None
                self._starting += 1
        finally:
            for w in dead:
                self._discard(w)
        try:
            w = self._spawn()
        except BaseException:
            with self._lock:
                self._starting -= 1
            raise
        with self._lock:
            self._starting -= 1
            self._busy.add(w)
        return w

    def release(self, worker: WorkerProcess) -> None:
        """Give ``worker`` back after a job; a dead or killed one is discarded and replaced."""
        if worker.startup is not None:
            self._last_startup = worker.startup
        with self._lock:
            self._busy.discard(worker)
            keep = not worker.broken and not self._closed  # a death shows at the next take (or its channel)
            if keep:
                self._idle.append(worker)
            replace = not keep and not self._closed
        if keep:
            return
        self._discard(worker)
        # every worker registered with the reaper, so no pid now means it was closed: the kernel is ending
        if replace and self.reaper.pid is not None:
            try:
                self.prestart(len(self._idle) + len(self._busy) + 1)
            except OSError:
                log.exception("could not start a replacement worker process")

    def _discard(self, worker: WorkerProcess) -> None:
        """Forget ``worker``: end its session (whatever it left running) and reap it; never blocks long."""
        with self._lock:
            self._replaced += 1
        worker.broken = True
        worker.close()
        if worker.proc.poll() is None or tree_alive(worker.pid):
            terminate_tree(worker.pid, self.grace, self.timers, worker._forget)
            self.timers.schedule(self.grace + 0.5, lambda: _reap(worker))
        else:
            _reap(worker)
            worker._forget()

    def recycle(self) -> None:
        """Replace every worker (idle ones now, busy ones after their job), e.g. after user modules changed."""
        with self._lock:
            total = len(self._idle) + len(self._busy)
            idle, self._idle = self._idle, []
            for w in self._busy:
                w.broken = True
        for w in idle:
            self._discard(w)
        if idle:
            self.prestart(total)

    @property
    def pids(self) -> list[int]:
        """The pids of the pool's workers (idle and busy)."""
        with self._lock:
            return [w.pid for w in (*self._idle, *self._busy)]

    def statistics(self) -> PoolStats:
        """A frozen snapshot of the pool."""
        with self._lock:
            return PoolStats(
                size=self.size,
                idle=len(self._idle),
                busy=len(self._busy),
                started=self._started,
                replaced=self._replaced,
                last_startup=self._last_startup,
            )

    # ---- ending -----------------------------------------------------------
    def shutdown(self, timeout: float = 1.0) -> None:
        """End every worker: close the channels, SIGTERM, wait up to ``timeout``, SIGKILL the rest, reap."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = set(self._idle)
            workers = [*self._idle, *self._busy]
            self._idle.clear()
        for w in workers:
            w.broken = True
            if w in idle:
                w.close()  # a busy worker's channel is closed by its task's thread, which reads it
            signal_tree(w.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for w in workers:
            while tree_alive(w.pid) and time.monotonic() < end:
                time.sleep(0.01)
        for w in workers:
            if tree_alive(w.pid):
                signal_tree(w.pid, signal.SIGKILL)
        for w in workers:
            _reap(w, 1.0)
            w._forget()
        if self._own_reaper:
            self.reaper.close()
        if self._own_timers:
            self.timers.close()


def _reap(worker: WorkerProcess, timeout: float = 0.0) -> None:
    try:
        worker.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


__all__ = ["PoolStats", "WorkerPool", "WorkerProcess"]
