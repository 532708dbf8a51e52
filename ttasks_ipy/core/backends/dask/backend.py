"""``DaskBackend``: jobs on the workers of a Dask cluster, one implementation of ``Backend``.

``submit`` pickles the runner (``pickle_runner``) and hands ``worker.run_job``,
with a key of its own (``name-session-n``: Dask groups a task's attempts, or a
graph's tasks, under the name; unnamed tasks under ``bg``), to the *sender*, a
thread that submits what came together as one ``Client.map`` (one graph
update on the scheduler for a burst of jobs).

A graph's edges, in prose: a job whose task has dependents (``Job.keep``) is
sent with a *marker*, a no-op task of the same group. Its dependents are
submitted with the markers of their dependencies as inputs (``Job.after``),
so Dask sees a graph, as with its own: it sends a dependent to a worker at
once instead of queuing it as a root task, near its dependencies. The marker,
not the job, is the input because Dask computes a lost input again, and a
command must not run twice; a marker may. Markers are kept until
``forget`` (the graph's run ended); the values a dependent reads travel with
its runner, from the kernel.
Everything comes back on one thread of ours (the *drain*), in order: the
events of this backend's topic (``Client.subscribe_topic``: batches of
output, progress and where a job runs; the reply of a job whose value is
small), the cluster's own ``all`` topic (a worker removed), and the futures'
done callbacks. A job ends once, with the first of: its reply event, its
future's end (a large value is fetched then), or the loss of its worker.

Cancel returns at once: on a thread for signals, ``Client.run`` calls
``worker.cancel_job`` on the job's worker (on every worker while it is not
known yet) and the future is cancelled, so a queued job never starts and a
running one is stopped for real. A worker removed while it ran a job ends
that job with ``WorkerDied('lost (worker ADDRESS)')`` (the executor retries it
if it has retries); its future is cancelled so Dask does not run it again.
"""
from __future__ import annotations

import itertools
import logging
import queue
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle

from ...errors import (
    CommandFailed,
    SpecError,
    TaskCancelled,
    WorkerDied,
)
from ..base import Backend, BackendStats, Job, JobEvents, JobHandle
from ..remote import one_line, pickle_runner, reply_outcome
from .worker import cancel_job, run_job

log = logging.getLogger("ttasks_ipy")

_STOP = object()
#: seconds between two checks of the futures of unfinished jobs
CHECK_SECONDS = 0.25
#: jobs sent to the scheduler in one message at most
SEND_BATCH = 1000
_LOOPBACK = re.compile(r"^\w+://(127\.\d+\.\d+\.\d+|localhost|\[::1\]):")


class DaskJob(JobHandle):
    """What ``submit`` returns: the job's key, future and events."""

    __slots__ = ("key", "events", "future", "address", "done", "cancelling", "placed", "seen_over", "task_id",
                 "marker_key", "marker")

    def __init__(self, key: str, events: JobEvents, task_id: int = 0, marker_key: str | None = None) -> None:
        self.key = key
        self.events = events
        self.task_id = task_id
        #: the key of its marker (``Job.keep``): dependents are submitted after the marker (see ``submit``)
        self.marker_key = marker_key
        self.marker: Any = None
        self.future: Any = None
        #: the worker it runs on, once known
        self.address: str | None = None
        self.done = False
        self.cancelling = False
        self.placed = False
        #: the checks that found its future over without its reply (the reply may be on its way)
        self.seen_over = 0



class DaskBackend(Backend):
    """Runs jobs on the workers of ``client``'s cluster (``cluster``: a ``LocalCluster`` it owns, or None)."""

    name = "dask"
    remote = True

    def __init__(self, client: Any, *, cluster: Any = None, dashboard: str | None = None) -> None:
        self.client = client
        self.cluster = cluster
        #: the Dask dashboard's address, if the cluster has one
        self.dashboard = dashboard
        token = secrets.token_hex(4)
        self.topic = f"ttasks-{token}"
        self._token = token
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._jobs: dict[str, DaskJob] = {}
        #: task id -> the marker future of a job that succeeded and whose dependents are yet to come (``Job.keep``)
        self._kept: dict[int, Any] = {}
        self._submitted = 0
        self._lost = 0
        self._closed = False
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: (handle, args) of jobs to send to the scheduler, taken in bursts by the sender
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._signals = ThreadPoolExecutor(2, thread_name_prefix="ttasks-dask-signal")  # cancels
        self._fetches = ThreadPoolExecutor(2, thread_name_prefix="ttasks-dask-fetch")  # large values
        self._drain_thread = threading.Thread(target=self._drain, name="ttasks-dask-drain", daemon=True)
        self._drain_thread.start()
        self._send_thread = threading.Thread(target=self._send_jobs, name="ttasks-dask-send", daemon=True)
        self._send_thread.start()
        client.subscribe_topic(self.topic, self._inbox.put)
        client.subscribe_topic("all", self._inbox.put)

    # ---- Backend ---------------------------------------------------------
    def submit(self, job: Job, events: JobEvents) -> JobHandle:
        if self._closed:
            raise SpecError("the Dask backend is shut down")
        payload = pickle_runner(job.runner, "a Dask worker")
        prefix = f"{_key_prefix(job.label)}-{self._token}"
        key = f"{prefix}-{next(self._ids)}"
        marker = f"{prefix}-{next(self._ids)}" if job.keep else None
        handle = DaskJob(key, events, job.task_id, marker)
        grace = float(getattr(job.services, "grace", 2.0))
        with self._lock:
            self._jobs[key] = handle
            self._submitted += 1
            self._kept.pop(job.task_id, None)  # run again: its earlier marker is no one's input now
            inputs = [m for t in job.after if (m := self._kept.get(t)) is not None]
        self._outbox.put((handle, (payload, key, self.topic, job.label, job.attempt, grace, inputs)))
        return handle

    def _send_jobs(self) -> None:
        """The sender: jobs go to the scheduler as they come, those that came together in one message.

        A burst (a graph's fan-out, a loop of ``%bg``) becomes one
        ``Client.map``: one graph update on the scheduler instead of one a job.
        """
        get, get_nowait = self._outbox.get, self._outbox.get_nowait
        while True:
            batch = [get()]
            while len(batch) < SEND_BATCH:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            items = [(h, args) for h, args in (i for i in batch if i is not _STOP) if not h.done]
            if items:
                try:
                    self._send_batch(items)
                except Exception as e:  # the client is closed or broken: these jobs cannot start
                    for handle, _args in items:
                        self._end(handle, error=WorkerDied(f"lost (the Dask cluster: {one_line(e)})"))
            if stop:
                return
            del batch, items  # their futures are not kept alive while the sender waits

    def _send_batch(self, items: list[tuple[DaskJob, tuple[Any, ...]]]) -> None:
        work: list[tuple[DaskJob, bool, tuple[Any, ...]]] = []
        for handle, args in items:
            work.append((handle, False, args))
            if handle.marker_key is not None:
                work.append((handle, True, (None, handle.marker_key, *args[2:6], [])))
        keys = [args[1] for _h, _m, args in work]
        if len(work) == 1:
            futures = [self.client.submit(run_job, *work[0][2], key=keys[0], pure=False)]
        else:
            columns = list(zip(*(args for _h, _m, args in work), strict=True))
            futures = self.client.map(run_job, *columns, key=keys, pure=False)
        pairs = list(zip(work, futures, strict=True))
        for (handle, is_marker, _args), future in pairs:  # markers first: a job that ends at once keeps its own
            if is_marker:
                handle.marker = future
        late = []
        for (handle, is_marker, _args), future in pairs:
            if not is_marker:
                handle.future = future
            if handle.cancelling or handle.done:  # cancelled while it was on its way: its cancel saw no future
                handle.marker = None
                late.append(future)
        for future in late:
            future.cancel()

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, DaskJob)
        if handle.done or handle.cancelling:
            return
        handle.cancelling = True
        self._signal(self._stop, handle)

    def forget(self, task_ids: Any) -> None:
        with self._lock:
            dropped = [self._kept.pop(t, None) for t in task_ids]
        del dropped  # the futures go here, outside the lock: Dask releases their keys

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            jobs = list(self._jobs.values())
            self._kept.clear()
        futures = [j.future for j in jobs if j.future is not None]
        try:
            if futures:
                self.client.run(cancel_job_all, [j.key for j in jobs], on_error="ignore")
                self.client.cancel(futures)
        except Exception:
            log.debug("cancelling Dask jobs at shutdown failed", exc_info=True)
        for topic in (self.topic, "all"):
            try:
                self.client.unsubscribe_topic(topic)
            except Exception:
                pass
        self._inbox.put(_STOP)
        self._outbox.put(_STOP)
        self._signals.shutdown(wait=False, cancel_futures=True)
        self._fetches.shutdown(wait=False, cancel_futures=True)
        try:
            self.client.close(timeout=5)
        except Exception:
            log.debug("closing the Dask client failed", exc_info=True)
        if self.cluster is not None:
            try:
                self.cluster.close(timeout=10)
            except Exception:
                log.debug("closing the LocalCluster failed", exc_info=True)

    def statistics(self) -> BackendStats:
        with self._lock:
            return BackendStats(self.name, len(self._jobs), self._submitted,
                                (("scheduler", self.address), ("lost", self._lost)))

    @property
    def address(self) -> str:
        """The scheduler's address."""
        try:
            return str(self.client.scheduler.address)
        except Exception:
            return ""

    @property
    def idle(self) -> bool:
        """True when no job of this backend is running or queued."""
        with self._lock:
            return not self._jobs

    # ---- the drain: everything that comes back, in order -----------------
    def _drain(self) -> None:
        get, check_at = self._inbox.get, time.monotonic() + CHECK_SECONDS
        while True:
            try:
                item = get(timeout=CHECK_SECONDS)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    self._on_event(item[1])
                if time.monotonic() >= check_at:
                    check_at = time.monotonic() + CHECK_SECONDS
                    self._check_futures()
            except Exception:
                log.exception("handling a Dask event failed")

    def _check_futures(self) -> None:
        """Jobs whose future ended without a reply: an error of Dask's own, a cancel, a lost reply."""
        with self._lock:
            handles = [h for h in self._jobs.values() if h.future is not None and h.future.status != "pending"]
        for handle in handles:
            handle.seen_over += 1
            future = handle.future
            if future is not None and (handle.seen_over > 1 or future.status != "finished"):
                self._on_future_done(future)

    def _on_event(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        batch = msg.get("b")
        if batch:
            self._forward(batch)
        for key, body in msg.get("r") or ():
            with self._lock:
                handle = self._jobs.get(key)
            if handle is None:
                continue
            if body.get("op") == "fetch":
                self._forward(body.get("b") or ())
                if body.get("where"):
                    self._placed(handle, body["where"])
                if handle.future is not None:
                    self._fetch_later(handle, handle.future)  # a large value: fetched off the drain
            else:
                self._complete(handle, body)
        if msg.get("action") == "remove-worker":
            self._worker_removed(str(msg.get("worker", "")), msg.get("processing-tasks") or ())

    def _forward(self, batch: list[list[Any]]) -> None:
        jobs = self._jobs
        for item in batch:
            handle = jobs.get(item[0])
            if handle is None or handle.done:
                continue
            what = item[1]
            if what == "o":
                handle.events.output(item[2], item[3])
            elif what == "p":
                handle.events.progress(item[2], item[3])
            elif what == "w":
                self._placed(handle, item[2], item[3])

    def _placed(self, handle: DaskJob, where: str, pid: int | None = None) -> None:
        """Say where the job runs: once, and again when a command's process started there.

        The pid of a command is passed on only from a worker on this machine
        (a loopback address): elsewhere it would name some process here.
        """
        if handle.placed and pid is None:
            return
        handle.placed = True
        handle.address = where.rsplit(" ", 1)[-1]
        if self.dashboard:
            where = f"{where} · dashboard {self.dashboard}"
        local = _LOOPBACK.match(handle.address) is not None
        handle.events.placed(where, pid if local else None)

    def _on_future_done(self, future: Any) -> None:
        with self._lock:
            handle = self._jobs.get(future.key)
        if handle is None or handle.done:
            return
        status = future.status
        if status == "finished":
            self._fetch_later(handle, future)
        elif status == "cancelled":
            if handle.cancelling:
                self._end(handle, error=TaskCancelled("cancelled"))
            else:
                self._end(handle, error=WorkerDied("lost (the Dask scheduler dropped the task)"))
        else:
            try:
                exc = future.exception(timeout=5)
            except Exception as e:
                exc = e
            self._end(handle, error=_dask_error(exc))

    def _fetch_later(self, handle: DaskJob, future: Any) -> None:
        try:
            self._fetches.submit(self._fetch, handle, future)
        except RuntimeError:  # shut down
            pass

    def _fetch(self, handle: DaskJob, future: Any) -> None:
        try:
            reply = future.result(timeout=60)
        except Exception as e:
            self._end(handle, error=_dask_error(e))
            return
        self._complete(handle, reply)

    def _worker_removed(self, address: str, keys: Any) -> None:
        keys = set(keys)
        with self._lock:
            lost = [h for h in self._jobs.values() if not h.done and (h.key in keys or h.address == address)]
            self._lost += len(lost)

        for handle in lost:
            if self._end(handle, error=WorkerDied(f"lost (worker {address})")):
                handle.cancelling = True
                handle.address = None  # gone: the cancel goes to every worker, where Dask may run it again
                self._signal(self._stop, handle)

    # ---- ending a job, once ---------------------------------------------
    def _take(self, handle: DaskJob) -> bool:
        with self._lock:
            if handle.done:
                return False
            handle.done = True
            self._jobs.pop(handle.key, None)
            return True

    def _complete(self, handle: DaskJob, reply: dict[str, Any]) -> None:
        if handle.done:
            return
        batch = reply.get("b")
        if batch:
            self._forward(batch)
        if not handle.placed and reply.get("where"):
            self._placed(handle, reply["where"])
        try:
            value, error = _outcome(reply), None
        except BaseException as e:  # noqa: BLE001 - the task's own failure, as sent
            value, error = None, e
        if self._take(handle):
            handle.future = None  # the key is released: nothing is kept on the cluster
            marker, handle.marker = handle.marker, None  # but the marker, for dependents still to come
            if marker is not None and error is None:
                with self._lock:
                    self._kept[handle.task_id] = marker
            handle.events.finished(value=value, error=error)

    def _end(self, handle: DaskJob, *, error: BaseException) -> bool:
        if not self._take(handle):
            return False
        handle.marker = None
        handle.events.finished(error=error)
        return True

    # ---- signals to the cluster, off the caller's thread ----------------
    def _signal(self, fn: Any, *args: Any) -> None:
        try:
            self._signals.submit(fn, *args)
        except RuntimeError:  # shut down
            pass

    def _stop(self, handle: DaskJob) -> None:
        """The future first (a queued job never starts, a lost one is not run again), then the running work."""
        future = handle.future
        if future is not None:
            try:
                future.cancel()
            except Exception:
                log.debug("cancelling the future of %s failed", handle.key, exc_info=True)
        workers = [handle.address] if handle.address else None
        try:
            self.client.run(cancel_job, handle.key, workers=workers, on_error="ignore")
        except Exception:
            log.debug("the cancel of %s did not reach its worker", handle.key, exc_info=True)
        if not handle.done and future is None:
            self._end(handle, error=TaskCancelled("cancelled"))


def _key_prefix(label: str) -> str:
    """The part of a job's key Dask groups by (its dashboard, its per-group work): a task's name, a graph's name.

    Unnamed tasks (``#12``) share one group, ``bg``: a group per task would make
    the scheduler's work per submit grow with the number of tasks.
    """
    head = label.split(".", 1)[0]
    return head if head.isidentifier() else "bg"


def cancel_job_all(keys: list[str]) -> None:
    """Run on every worker at shutdown: stop these jobs wherever they run."""
    for key in keys:
        cancel_job(key)


def _dask_error(exc: BaseException | None) -> BaseException:
    """What a Dask-level failure of a job means here (its worker died, it could not be unpickled)."""
    if exc is None:
        return WorkerDied("lost (the Dask future ended without a result)")
    name = type(exc).__name__
    text = str(exc)
    if name == "KilledWorker":
        m = re.search(r"(\w+://[^\s.]+(?:\.[^\s.]+)*:\d+)", text)
        return WorkerDied(f"lost (worker {m.group(1)})" if m else "lost (its Dask workers died)")
    if name in ("ModuleNotFoundError", "ImportError") and "ttasks_ipy" in text:
        return SpecError(f"the Dask workers cannot run the task: {one_line(exc)} "
                         "(install ttasks_ipy where the workers run)")
    if isinstance(exc, (OSError, TimeoutError)) or name in ("CommClosedError", "FutureCancelledError"):
        return WorkerDied(f"lost (the Dask cluster: {one_line(exc)})")
    return exc


def _outcome(reply: dict[str, Any]) -> Any:
    """The value of a reply, or raise what it says."""
    op = reply["op"]
    if op == "cancelled":
        raise TaskCancelled("cancelled")
    if op == "command_failed":
        result = None
        if reply.get("result") is not None:
            try:
                result = cloudpickle.loads(reply["result"])
            except Exception:
                result = None
        raise CommandFailed(reply["message"], result)
    return reply_outcome(reply, "the Dask worker")


__all__ = ["DaskBackend", "DaskJob"]
