"""The worker side of Dask tasks: ``run_job`` runs one attempt on a Dask worker and speaks back.

``run_job`` is what the kernel submits: it unpickles the runner, runs it with
a ``TaskContext`` of its own (whose events are forwarded, see below), catches
whatever the body raises and returns a *reply* (a dict, as the process
backend's wire protocol: ``op`` is ``done``, ``error``, ``failed``,
``command_failed`` or ``cancelled``). The reply also goes back at once as a
topic event when it is small, so the kernel rarely fetches a result at all.

Forwarding, in prose: output and progress of every job of this worker
process wait in their ``WorkerJob`` (output joined, progress coalesced to
the latest); one forwarder thread sends what waits every ``TICK`` seconds as
one ``Worker.log_event(topic, ...)`` per topic (the kernel subscribed to its
topic with ``Client.subscribe_topic``). A job that has printed ``BATCH_CHARS``
characters is sent at once. A job still running after one tick is announced
(``w``: where it runs) on that tick; what is left when the job ends travels in
its reply. Messages are lists: ``[key, "o", stream, text]``, ``[key, "p",
percent, message]``, ``[key, "w", where, pid]``.

Cancel, in prose: the kernel calls ``cancel_job(key)`` on the worker with
``Client.run``. It runs the aborts the runner registered on its context: a
command's process tree is ended (SIGTERM, grace, SIGKILL), a Python body gets
``TaskCancelled`` raised in its thread. A cancel that arrives before the job
is known here is remembered for a while, and the job stops as it starts.
Commands run under a supervisor and a reaper of this worker process, so a
worker that dies takes its commands' process trees with it.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
import traceback
from typing import Any

import cloudpickle

from ... import capture
from ...context import TaskContext
from ...errors import CommandFailed, SpecError, TaskCancelled
from ...runners.python import AsyncCancel, Interruptible
from ..base import JobEvents
from ..remote import one_line, type_name

#: seconds between two sends of waiting output and progress
TICK = 0.05
#: characters of output that make a job's batch go at once
BATCH_CHARS = 65_536
#: bytes of a pickled value small enough to travel in the reply event (larger ones are fetched)
EVENT_VALUE_BYTES = 65_536
#: seconds within which replies are sent together (the first one after a quiet spell goes at once)
REPLY_GAP = 0.005
#: seconds a cancel for a job not (yet) known here is remembered
TOMBSTONE_SECONDS = 300.0




class WorkerJob(JobEvents):
    """One job on this worker: its ``JobEvents`` (batched for the forwarder) and its context."""

    def __init__(self, key: str, topic: str, address: str, forwarder: Forwarder) -> None:
        self.key = key
        self.topic = topic
        self.where = f"Dask worker {address}"
        self.started = time.monotonic()
        self.ctx: TaskContext | None = None
        self._forwarder = forwarder
        self._lock = threading.Lock()
        self._outputs: list[list[Any]] = []
        self._chars = 0
        self._progress: list[Any] | None = None
        self._announced = False
        self._pid: int | None = None

    def output(self, stream: str, text: str) -> None:
        with self._lock:
            last = self._outputs[-1] if self._outputs else None
            if last is not None and last[2] == stream:
                last[3] += text
            else:
                self._outputs.append([self.key, "o", stream, text])
            self._chars += len(text)
            full = self._chars >= BATCH_CHARS
        if full:
            self._forwarder.send_now(self)

    def progress(self, percent: float | None, message: str | None) -> None:
        with self._lock:
            self._progress = [self.key, "p", percent, message]

    def placed(self, where: str | None, pid: int | None) -> None:
        """A command started its process here: said (again) with the worker's address at the next send."""
        with self._lock:
            self._pid = pid
            self._announced = False

    def finished(self, value: Any = None, error: BaseException | None = None) -> None:
        """The reply is what ``run_job`` returns."""

    def take(self, *, announce: bool) -> list[list[Any]]:
        """What waits to be sent (the announcement first, when ``announce`` and not made yet)."""
        with self._lock:
            out: list[list[Any]] = []
            if announce and not self._announced:
                self._announced = True
                out.append([self.key, "w", self.where, self._pid])
            out.extend(self._outputs)
            if self._progress is not None:
                out.append(self._progress)
            self._outputs, self._chars, self._progress = [], 0, None
            return out


class Forwarder:
    """Sends the waiting events and replies of this process's jobs, in order, as few messages as it can.

    Output and progress go every ``TICK`` seconds; a reply goes at once when
    nothing was sent for ``REPLY_GAP`` seconds, else with the others of the
    next ``REPLY_GAP`` (many short jobs: one message for many replies). A take
    and its send happen under one lock, so a job's batches and its reply leave
    in the order they were taken.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._send_lock = threading.Lock()
        self._jobs: dict[str, WorkerJob] = {}
        self._cancelled: dict[str, float] = {}
        self._replies: dict[str, list[list[Any]]] = {}
        self._reply_due = 0.0
        self._next_tick = 0.0
        self._last_reply_sent = 0.0
        self._thread: threading.Thread | None = None
        self._worker: Any = None

    def add(self, job: WorkerJob, worker: Any) -> bool:
        """Know ``job`` from now on; False when a cancel for it came first."""
        with self._lock:
            self._worker = worker
            if not self._jobs:
                self._next_tick = time.monotonic() + TICK
            self._jobs[job.key] = job
            cancelled = self._cancelled.pop(job.key, None) is not None
            self._ensure_thread()
            self._lock.notify()
        return not cancelled

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="ttasks-dask-forwarder", daemon=True)
            self._thread.start()

    def finish(self, job: WorkerJob, reply: dict[str, Any]) -> None:
        """Forget ``job`` and send ``reply`` (with what the job had not sent yet)."""
        with self._send_lock:
            with self._lock:
                self._jobs.pop(job.key, None)
            reply["b"] = job.take(announce=False)
            now = time.monotonic()
            with self._lock:
                pending = self._replies.setdefault(job.topic, [])
                pending.append([job.key, reply])
                if now - self._last_reply_sent < REPLY_GAP:  # busy: goes with the next ones
                    if len(pending) == 1:
                        self._reply_due = self._last_reply_sent + REPLY_GAP
                        self._ensure_thread()
                        self._lock.notify()
                    return
                replies, self._replies = self._replies, {}
                self._last_reply_sent = now
            for topic, items in replies.items():
                self._send(topic, {"r": items})

    def cancel(self, key: str) -> bool:
        """Stop the job ``key`` (or the one that starts with that key soon); True if it runs here now."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                now = time.monotonic()
                for k in [k for k, t in self._cancelled.items() if now - t > TOMBSTONE_SECONDS]:
                    del self._cancelled[k]
                self._cancelled[key] = now
                return False
        ctx = job.ctx
        if ctx is not None:
            ctx.cancel()
        return True

    def send_now(self, job: WorkerJob) -> None:
        """Send ``job``'s waiting output now (from its own thread)."""
        with self._send_lock:
            self._send(job.topic, {"b": job.take(announce=True)})

    def _send(self, topic: str, msg: dict[str, Any]) -> None:
        worker = self._worker
        if worker is not None and any(msg.values()):
            try:
                worker.log_event(topic, msg)
            except Exception:  # the worker is closing: nothing to send to
                pass

    def _loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    due = [self._next_tick] if self._jobs else []
                    if self._replies:
                        due.append(self._reply_due)
                    if due and min(due) <= now:
                        break
                    self._lock.wait(min(due) - now if due else None)
                tick = bool(self._jobs) and self._next_tick <= now
                if tick:
                    self._next_tick = now + TICK
            with self._send_lock:
                with self._lock:
                    jobs = list(self._jobs.values()) if tick else []
                    replies, self._replies = self._replies, {}
                    if replies:
                        self._last_reply_sent = now
                msgs: dict[str, dict[str, Any]] = {}
                for job in jobs:
                    taken = job.take(announce=now - job.started >= TICK)
                    if taken:
                        msgs.setdefault(job.topic, {"b": [], "r": []})["b"].extend(taken)
                for topic, items in replies.items():
                    msgs.setdefault(topic, {"b": [], "r": []})["r"].extend(items)
                for topic, msg in msgs.items():
                    self._send(topic, msg)


_forwarder = Forwarder()


class WorkerServices:
    """What runners borrow here as they do from the kernel's executor: timers, a supervisor, a reaper."""

    def __init__(self) -> None:
        from ...timers import Timers

        self._lock = threading.Lock()
        self.timers = Timers("ttasks-dask-timers")
        self._supervisor: Any = None
        self._reaper: Any = None
        self.grace = 2.0

    @property
    def supervisor(self) -> Any:
        """Commands run under it (a subreaper per command), started on first use."""
        with self._lock:
            if self._supervisor is None:
                from ...supervisor import Supervisor

                self._supervisor = Supervisor(self.grace)
                self._supervisor.start()
            return self._supervisor

    @property
    def reaper(self) -> Any:
        """Ends the commands' processes if this worker process dies, started on first use."""
        with self._lock:
            if self._reaper is None:
                from ...reaper import Reaper

                self._reaper = Reaper(self.grace)
                self._reaper.start()
            return self._reaper


class _JobServices:
    """The worker's services with this job's grace."""

    __slots__ = ("_base", "grace")

    def __init__(self, base: WorkerServices, grace: float) -> None:
        self._base = base
        self.grace = grace

    @property
    def timers(self) -> Any:
        return self._base.timers

    @property
    def supervisor(self) -> Any:
        return self._base.supervisor

    @property
    def reaper(self) -> Any:
        return self._base.reaper


_services: WorkerServices | None = None
_services_lock = threading.Lock()


def _job_services(grace: float) -> _JobServices:
    global _services
    with _services_lock:
        if _services is None:
            _services = WorkerServices()
        return _JobServices(_services, grace)


def _reply_for_error(e: BaseException, runner: Any, ctx: TaskContext) -> dict[str, Any]:
    if isinstance(e, TaskCancelled) and ctx.cancelled:
        return {"op": "cancelled"}
    if isinstance(e, CommandFailed):
        try:
            result = cloudpickle.dumps(e.result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            result = None
        return {"op": "command_failed", "message": str(e), "result": result}
    if isinstance(e, SpecError):
        return {"op": "failed", "stage": "compile", "message": str(e)}
    try:
        exc_data: bytes | None = cloudpickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        exc_data = None
    filename = getattr(runner, "filename", None)
    tb = e.__traceback__
    while tb is not None and filename is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(e), e, tb if tb is not None else e.__traceback__))
    return {"op": "error", "type": type_name(e), "message": str(e), "traceback": text, "exception": exc_data}


def _reply_for_value(value: Any, runner: Any) -> dict[str, Any]:
    try:
        return {"op": "done", "value": cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)}
    except Exception as e:
        err: BaseException = e
    what, hint = f"the value is a {type_name(value)}", ""
    if not getattr(runner, "is_expression", True) and isinstance(value, dict):
        for name, v in value.items():
            try:
                cloudpickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as inner:
                what, err, hint = f"{name!r} is a {type_name(v)}", inner, ": choose the names to send back"
                break
    return {"op": "failed", "stage": "result",
            "message": f"the result cannot be sent back from the Dask worker: {what} ({one_line(err)}){hint}"}


def run_job(payload: bytes, key: str, topic: str, label: str, attempt: int, grace: float,
            inputs: Any = ()) -> dict[str, Any]:
    """Run one attempt on this Dask worker; returns its reply (never raises for the runner's errors).

    ``inputs`` are the markers of the jobs it runs after (a graph's edges, see
    ``DaskBackend.submit``); the values it reads came with its runner. With no
    ``payload`` it is such a marker: it does nothing, so Dask may run it again.
    """
    if payload is None:
        return {"op": "marker"}
    from distributed import get_worker

    worker = get_worker()
    job = WorkerJob(key, topic, worker.address, _forwarder)
    ctx = TaskContext(label, attempt, job, services=_job_services(grace))
    job.ctx = ctx
    runner: Any = None
    if not _forwarder.add(job, worker):
        ctx.cancel()
    token = ctx.activate()
    capture.install()
    try:
        runner = cloudpickle.loads(payload)
        # a Python body is interrupted in its thread; a command ends its own process tree
        guard = Interruptible(ctx) if runner.kind == "python" else contextlib.nullcontext()
        with capture.route(ctx), guard:
            value = runner.run(ctx)
    except AsyncCancel:
        reply = {"op": "cancelled"}
    except BaseException as e:  # the body's own failure, whatever it is
        if runner is None:
            reply = {"op": "failed", "stage": "input",
                     "message": f"cannot receive the task on the Dask worker: {one_line(e)}"}
        else:
            reply = _reply_for_error(e, runner, ctx)
    else:
        reply = _reply_for_value(value, runner)
    finally:
        capture.uninstall()
        ctx.deactivate(token)
    reply["where"] = job.where
    reply["pid"] = os.getpid()
    value_bytes = reply.get("value") or b""
    # the reply goes back as an event; a large value stays here until the kernel fetches the result
    short = reply if len(value_bytes) <= EVENT_VALUE_BYTES else {"op": "fetch", "where": job.where}
    _forwarder.finish(job, short)
    if short is not reply:
        reply["b"] = []
    return reply


def cancel_job(key: str) -> bool:
    """Run by the kernel on this worker (``Client.run``): stop job ``key``; True if it ran here."""
    return _forwarder.cancel(key)


__all__ = ["Forwarder", "WorkerJob", "WorkerServices", "cancel_job", "run_job"]
