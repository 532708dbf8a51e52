"""``Pump``: the one kernel thread that follows every ``--process`` job.

A job's way, in prose: ``submit`` (any thread) blocks on nothing; it puts
the job on ``_incoming`` and wakes the pump. The pump pickles the runner (so
a big input never holds up the cell that dispatched it) and takes a worker
from the pool (an idle one, or a new one while fewer than ``size`` exist;
else the job waits in ``_waiting``, oldest first). It sends the job, with
the write ends of two fresh output pipes (``SCM_RIGHTS``) unless the worker
kept its last job's pipes, and from then on reads, in one selector, the
channel of every busy worker and the pipes of every job. A worker's reply
gives the worker back to the pool at once. All the output the worker wrote is
in the pipes by then: the pump reads them empty, and if the reply says the
worker kept them (the job left nothing running that could still write
there) the job ends now and the pipes wait, still registered, for that
worker's next job. Otherwise the job ends when both its pipes reached end
of file (or ``DRAIN_SECONDS`` after the reply, if something the job started
still holds them), so that all its output is reported before ``finished``.
Kept pipes close when they reach end of file (their worker ended) or with
the pump.

The executor starts the next task from ``finished``, which runs on this
thread: that job is sent within the same turn of the loop, so a worker goes
from one reply to its next job without another kernel thread waking up. One
thread instead of one per job is what lets four workers run four jobs at
once on a kernel with one interpreter lock.

A cancel (any thread) is queued too: a waiting job ends at once, a running
one has its worker's whole session ended (SIGTERM, grace, SIGKILL), and its
end comes when the pump sees the channel close. A worker that died before
the job reached it (killed while idle, failed to start) costs the job one
more try on another worker.
"""
from __future__ import annotations

import collections
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import TaskCancelled, WorkerDied
from ...output import PipeDecoder
from ..base import Job, JobEvents, JobHandle

if TYPE_CHECKING:
    from ...spec import Runner
    from .pool import WorkerPool, WorkerProcess

log = logging.getLogger("ttasks_ipy")

#: how long to keep reading a job's pipes after its reply (or its worker's death)
DRAIN_SECONDS = 0.25
#: a job bigger than this is sent from a thread of its own (a worker still starting reads it late)
SEND_INLINE_BYTES = 256 * 1024
#: how long ``close`` waits for running jobs to end
CLOSE_SECONDS = 2.0

_STREAMS = ("stdout", "stderr")


class Pipes:
    """The read ends of one stdout and stderr pipe pair, and the job they now belong to (pump thread only)."""

    __slots__ = ("open", "job")

    def __init__(self, out_fd: int, err_fd: int) -> None:
        #: read end -> stream name, for the ends not yet closed
        self.open = {out_fd: "stdout", err_fd: "stderr"}
        self.job: ProcessJob | None = None


class ProcessJob(JobHandle):
    """One ``--process`` attempt, from ``submit`` to ``finished`` (fields written by the pump thread)."""

    __slots__ = ("job", "events", "payload", "extra", "worker", "pipes", "decoder", "reply", "error",
                 "drain_until", "wait_until", "cancelled", "done", "tries")

    def __init__(self, job: Job, events: JobEvents, extra: dict[str, Any]) -> None:
        self.job = job
        self.events = events
        #: the pickled runner, made by the pump just before the job is sent
        self.payload: bytes | None = None
        #: what the job carries besides the runner (added per worker: cwd, path, env where they changed)
        self.extra = extra
        self.worker: WorkerProcess | None = None
        #: the job's stdout and stderr pipes (None before it is sent and once they are closed or kept)
        self.pipes: Pipes | None = None
        self.decoder = PipeDecoder(events.output)
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.drain_until: float | None = None
        self.wait_until: float | None = None
        self.cancelled = False
        self.done = False
        self.tries = 0


class Pump:
    """Sends jobs to the workers of ``pool`` and follows them, on one daemon thread started on first use.

    ``pickled(runner)`` is what is sent (it raises the job's error if the
    runner cannot travel); ``outcome(reply)`` turns a worker's reply into the
    job's value (or raises its error); ``surroundings()`` is what a worker
    takes on before a job (the kernel's cwd, path, environment): a job
    carries each part only where it changed since that worker's last job. It
    is read once per turn of the loop, after the turn's jobs were submitted.
    """

    def __init__(self, pool: WorkerPool, pickled: Callable[[Runner], bytes],
                 outcome: Callable[[dict[str, Any]], Any],
                 surroundings: Callable[[], dict[str, Any]]) -> None:
        self.pool = pool
        self._pickled = pickled
        self._outcome = outcome
        self._surroundings = surroundings
        self._incoming: collections.deque[ProcessJob] = collections.deque()
        self._cancels: collections.deque[ProcessJob] = collections.deque()
        self._waiting: collections.deque[ProcessJob] = collections.deque()  # pump thread only
        self._on: dict[WorkerProcess, ProcessJob] = {}  # busy worker -> its job (pump thread only)
        self._draining: set[ProcessJob] = set()  # replied, pipes still open (pump thread only)
        self._kept: dict[WorkerProcess, Pipes] = {}  # an idle worker's pipes, for its next job (pump thread only)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._broken = False
        self._close_by = 0.0
        self.submitted = 0
        self.running = 0

    # ---- any thread -----------------------------------------------------
    def submit(self, handle: ProcessJob) -> None:
        """Queue ``handle`` for a worker; returns at once (``WorkerDied`` once the pump is closed)."""
        if self._closing:
            raise WorkerDied("the worker pool is shut down")
        if self._broken:
            raise WorkerDied("the --process pump stopped (see the log): restart the kernel")
        self.submitted += 1
        self._incoming.append(handle)
        if threading.current_thread() is not self._thread:
            self._ensure_thread()
            self._wake()

    def cancel(self, handle: ProcessJob) -> None:
        """Stop ``handle``'s job (a waiting one ends, a running one loses its worker); returns at once."""
        handle.cancelled = True
        self._cancels.append(handle)
        if threading.current_thread() is not self._thread:
            self._wake()

    def close(self) -> None:
        """Take no more jobs: waiting ones fail now, running ones when their workers end (``pool.shutdown``)."""
        with self._lock:
            self._closing = True
            self._close_by = time.monotonic() + CLOSE_SECONDS
            thread = self._thread
        if thread is None:
            self._release_fds()
        else:
            self._wake()

    def join(self, timeout: float = CLOSE_SECONDS + 1.0) -> None:
        """Wait (bounded) for the pump thread to end after ``close``."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._closing:
                t = threading.Thread(target=self._loop, name="ttasks-process-pump", daemon=True)
                self._thread = t
                t.start()

    def _wake(self) -> None:
        with self._lock:  # never a write to a number the closed pipe's end has passed on to another file
            fd = self._wake_w
            if fd < 0:
                return
            try:
                os.write(fd, b"x")
            except (BlockingIOError, OSError):
                pass  # full: a wake is pending anyway

    # ---- the pump thread ----------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                self._take_new()
                if self._closing:
                    self._refuse_waiting()
                    if not self._on and not self._draining:
                        return
                    if time.monotonic() >= self._close_by:
                        self._abandon()
                        return
                else:
                    self._place()
                for key, _ in self._sel.select(self._timeout()):
                    data = key.data
                    if data is None:
                        self._drain_wake()
                    elif isinstance(data, Pipes):
                        self._read_pipe(data, key.fd)
                    else:
                        self._read_channel(data)
                self._check_clocks()
        except BaseException:  # a bug here would hang every --process task: fail them instead
            log.exception("the --process pump stopped")
            self._broken = True  # first: a submit from now on is refused, not left waiting
            self._abandon()
        finally:
            self._release_fds()

    def _release_fds(self) -> None:
        """Close the wake pipe and the selector, once."""
        with self._lock:
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        for pipes in self._kept.values():
            self._close_pipes(pipes)
        self._kept.clear()
        self._sel.close()

    def _take_new(self) -> None:
        incoming, cancels = self._incoming, self._cancels
        while incoming:
            h = incoming.popleft()
            if h.cancelled:
                self._end(h, _cancelled(h))
            else:
                h.wait_until = time.monotonic() + self.pool.acquire_timeout
                self._waiting.append(h)
        while cancels:
            h = cancels.popleft()
            if h.done:
                continue
            w = h.worker
            if w is not None:
                w.kill()  # its channel closes: _gone ends the job
            elif h in self._waiting:
                self._waiting.remove(h)
                self._end(h, _cancelled(h))

    def _place(self) -> None:
        waiting, pool = self._waiting, self.pool
        now: dict[str, Any] | None = None
        while waiting:
            h = waiting[0]
            if h.payload is None:
                try:
                    h.payload = self._pickled(h.job.runner)
                except Exception as e:  # the runner cannot travel: the task fails with one line
                    waiting.popleft()
                    self._end(h, e)
                    continue
            try:
                w = pool.take()
            except WorkerDied as e:  # shut down
                self._refuse_waiting(e)
                return
            except OSError as e:
                self._end(waiting.popleft(), WorkerDied(f"cannot start a worker process: {e}", True))
                continue
            if w is None:
                return
            if now is None:
                now = self._surroundings()
            self._send(waiting.popleft(), w, now)

    def _send(self, h: ProcessJob, w: WorkerProcess, now: dict[str, Any]) -> None:
        w.jobs += 1
        w.job_started = False
        payload = h.payload
        assert payload is not None
        msg = {"op": "run", "runner": payload, **h.extra}
        last = w.sent
        for part, value in now.items():
            if last.get(part) != value:
                msg[part] = last[part] = value
        sel = self._sel
        pipes = self._kept.pop(w, None)
        ends: tuple[int, ...] = ()
        if pipes is None or len(pipes.open) < 2:
            if pipes is not None:  # one end already closed: the worker is ending
                self._close_pipes(pipes)
            r_out, w_out = os.pipe()
            r_err, w_err = os.pipe()
            ends = (w_out, w_err)
            pipes = Pipes(r_out, r_err)
            for fd in (r_out, r_err):
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ, pipes)
        pipes.job = h
        h.pipes = pipes
        h.worker = w
        self._on[w] = h
        self.running += 1
        sel.register(w.channel.sock, selectors.EVENT_READ, w)
        h.events.placed(f"worker process {w.pid}", w.pid)
        if len(payload) <= SEND_INLINE_BYTES:
            _send_frame(w, msg, ends)
        else:
            threading.Thread(target=_send_frame, args=(w, msg, ends),
                             name="ttasks-process-send", daemon=True).start()

    def _read_channel(self, w: WorkerProcess) -> None:
        h = self._on.get(w)
        if h is None:  # let go of earlier in this turn (its key was already selected)
            return
        try:
            data = w.channel.sock.recv(65536)  # (not more: a bigger buffer is an mmap per call)
        except OSError:
            data = b""
        if not data:
            self._gone(w, h)
            return
        for msg in w.reader.feed(data):
            op = msg.get("op")
            if op == "ready":
                w.mark_ready()
            elif op == "started":
                w.job_started = True
            elif op == "progress":
                h.events.progress(msg.get("percent"), msg.get("message"))
            elif op in ("done", "error", "failed"):
                if msg.get("retire"):
                    w.broken = True  # the job left threads behind: not reused
                h.reply = msg
                self._read_all(h)  # what the worker wrote is there already: read it before anything ends
                pipes = h.pipes
                if msg.get("kept") and not w.broken and pipes is not None and len(pipes.open) == 2:
                    pipes.job = None  # the worker's next job writes there
                    h.pipes = None
                    self._kept[w] = pipes
                self._let_go(w, h)
                self._after_work(h, read=False)
                return

    def _gone(self, w: WorkerProcess, h: ProcessJob) -> None:
        """The worker's channel closed: it died (or was killed) while it held ``h``."""
        death = w.death()  # before the pool's discard closes the start-up pipe that says why it failed
        self._let_go(w, h)
        if death.before_job and h.tries == 0 and not h.cancelled and not self._closing:
            h.tries += 1  # it never reached the worker: once more, elsewhere
            self._close_job_pipes(h)
            h.decoder = PipeDecoder(h.events.output)
            h.wait_until = time.monotonic() + self.pool.acquire_timeout
            self._waiting.appendleft(h)
            return
        h.error = _cancelled(h) if h.cancelled else death
        self._after_work(h)

    def _let_go(self, w: WorkerProcess, h: ProcessJob) -> None:
        """``w`` no longer works for ``h``: stop reading it and give it back to the pool."""
        try:
            self._sel.unregister(w.channel.sock)
        except (KeyError, ValueError):
            pass
        del self._on[w]
        self.running -= 1
        h.worker = None
        try:
            self.pool.release(w)
        except Exception:  # a replacement that could not start is logged by the pool
            log.exception("could not give a worker process back")

    def _read_all(self, h: ProcessJob) -> None:
        """Read the job's pipes until they are empty (or closed)."""
        pipes = h.pipes
        if pipes is not None:
            for fd in list(pipes.open):
                while self._read_pipe(pipes, fd):
                    pass

    def _after_work(self, h: ProcessJob, read: bool = True) -> None:
        """The reply came (or the worker is gone): end now if the pipes are closed or kept, else drain them.

        The worker closes (or keeps) the job's pipes before it replies, so what
        they hold, and their end of file, are there already: read now (unless
        the caller just did), not a turn later.
        """
        if read:
            self._read_all(h)
        if h.pipes is None or not h.pipes.open:
            self._finish(h)
        else:  # something the job started holds a pipe: a short drain
            h.drain_until = time.monotonic() + DRAIN_SECONDS
            self._draining.add(h)

    def _read_pipe(self, pipes: Pipes, fd: int) -> bool:
        """Read what pipe ``fd`` holds into its job; True if there was data (False: nothing now, or its end)."""
        stream = pipes.open.get(fd)
        if stream is None:  # closed earlier in this turn (its key was already selected)
            return False
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        h = pipes.job
        if data:
            if h is not None:
                h.decoder.feed(stream, data)
            return True  # (kept pipes of an idle worker: nothing of any job's, dropped)
        self._sel.unregister(fd)
        os.close(fd)
        del pipes.open[fd]
        if not pipes.open:
            if h is None:  # an idle worker's kept pipes: it ended
                for w, kept in list(self._kept.items()):
                    if kept is pipes:
                        del self._kept[w]
            elif h.drain_until is not None:
                self._draining.discard(h)
                self._finish(h)
        return False

    def _close_pipes(self, pipes: Pipes) -> None:
        for fd in pipes.open:
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError):
                pass
            os.close(fd)
        pipes.open = {}

    def _close_job_pipes(self, h: ProcessJob) -> None:
        if h.pipes is not None:
            self._close_pipes(h.pipes)
            h.pipes.job = None
            h.pipes = None

    def _finish(self, h: ProcessJob) -> None:
        self._close_job_pipes(h)
        h.decoder.finish()
        if h.error is not None or h.cancelled:
            self._end(h, h.error or _cancelled(h))
            return
        reply = h.reply
        assert reply is not None
        try:
            value = self._outcome(reply)
        except BaseException as e:  # the job's own error, rebuilt here
            self._end(h, e)
            return
        self._end(h, value=value)

    def _end(self, h: ProcessJob, error: BaseException | None = None, value: Any = None) -> None:
        """Report the job's end, once."""
        if h.done:
            return
        h.done = True
        h.payload = None
        h.events.finished(value=value, error=error)

    def _refuse_waiting(self, error: WorkerDied | None = None) -> None:
        waiting = self._waiting
        while waiting:
            self._end(waiting.popleft(), error or WorkerDied("the worker pool is shut down"))

    def _abandon(self) -> None:
        """End every job still here (the pump is stopping)."""
        self._refuse_waiting()
        for h in [*self._on.values(), *self._draining, *self._incoming]:
            self._close_job_pipes(h)
            self._end(h, WorkerDied("the worker pool is shut down"))
        self._on.clear()
        self._draining.clear()
        self._incoming.clear()

    def _timeout(self) -> float | None:
        clocks = [h.drain_until for h in self._draining if h.drain_until is not None]
        if self._waiting:
            clocks.append(self._waiting[0].wait_until or 0.0)
            clocks.append(time.monotonic() + 0.1)  # room made by a resize of the pool (nothing wakes us for it)
        if self._closing:
            clocks.append(self._close_by)
        if not clocks:
            return None
        return max(0.0, min(clocks) - time.monotonic())

    def _check_clocks(self) -> None:
        now = time.monotonic()
        if self._draining:
            for h in [h for h in self._draining if h.drain_until is not None and h.drain_until <= now]:
                self._draining.discard(h)
                self._finish(h)
        waiting = self._waiting
        while waiting and (waiting[0].wait_until or 0.0) <= now:
            limit = self.pool.acquire_timeout
            self._end(waiting.popleft(), WorkerDied(
                f"no worker process became free in {limit:g}s (all {self.pool.size} busy): "
                "cancel a process task or resize the pool"))

    def _drain_wake(self) -> None:
        try:  # (the pump thread alone closes the pipe: its read end is still open here)
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass


def _cancelled(h: ProcessJob) -> TaskCancelled:
    return TaskCancelled(f"task {h.job.label} was cancelled")


def _send_frame(w: WorkerProcess, msg: dict[str, Any], ends: tuple[int, ...]) -> None:
    """Send the job with the pipes' write ends ``ends`` (if new), then close ours; a failure kills the worker."""
    try:
        w.channel.send(msg, fds=ends)
    except OSError:
        w.kill()  # (the pump sees its channel close)
    finally:
        for fd in ends:
            os.close(fd)


__all__ = ["DRAIN_SECONDS", "Pipes", "ProcessJob", "Pump"]
