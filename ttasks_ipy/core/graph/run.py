"""``GraphRun``: a graph of tasks running in the background, scheduled by the graphlib loop.

Every node becomes one core ``Task``, submitted with ``hold=True`` when the
graph starts, so all of them exist (PENDING) at once and can be looked at,
cancelled or waited for. The scheduler then follows the ``graphlib`` loop:
*prepare* (validate, find cycles, count each node's unfinished dependencies),
*get ready* (nodes whose count is zero) and *done* (a task ended: decrement
the counts of its dependents).

State of the scheduler, in prose (one ``_Run`` per start or rerun, touched
only by the thread that holds the run's ``drain`` lock):

- ``left[i]``: how many dependencies of node ``i`` in this run have not
  finished yet; ``bad[i]``: the names of those that finished without success.
- ``phase[i]``: WAITING (dependencies unfinished), READY (may run, waiting for
  a ``max_parallel`` slot), RELEASED (handed to the executor), FINISHED.
- ``ready``: READY nodes in the order they became ready; ``inflight``: how
  many RELEASED nodes have not finished (at most ``max_parallel``);
  ``unfinished``: how many nodes of the run have not finished.

Every task's done-callback puts ``(DONE, generation, index)`` on one queue;
``cancel()`` and the graph timeout put ``(STOP, ...)``. Whichever thread fed
the queue drains it (the caller of ``start()`` for the roots, else the thread
that ended a task), one at a time, so each event costs O(its node's
dependents) and a whole run costs O(tasks + edges). When a node's count reaches zero it is decided:
a ``finally`` node is released whatever its dependencies did; another node is
released if all dependencies succeeded, else ``block``ed with ``blocked_by``
(its own dependents are then blocked in turn, as each block is a done event).
After a stop, pending non-finally nodes are blocked and running ones
cancelled, but finally nodes still run once their dependencies are over.
The run ends when ``unfinished`` reaches zero; ``ok`` is then computed once.

A node's runner is built when the node is released, by its factory
``make_runner(upstream)``, so a body sees its dependencies' results
(``Upstream``) as they are at run time.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import SpecError, TaskNotDone, WaitTimeout
from ..names import check_name
from ..spec import TaskSpec, check_seconds
from ..states import TaskState
from ..task import Task, check_not_inside_task
from .nodes import GraphNode, NodeRunner, check_graph, suggest, where_of
from .upstream import Upstream

if TYPE_CHECKING:
    from ..executor import Executor
    from ..timers import Timer

log = logging.getLogger("ttasks_ipy")

_WAITING, _READY, _RELEASED, _FINISHED = range(4)
_DONE, _STOP = "done", "stop"


# ---- running a graph -----------------------------------------------------
@dataclass(frozen=True)
class GraphStats:
    """A snapshot of how many tasks of a graph are in each state."""

    total: int
    pending: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    blocked: int

    @property
    def finished(self) -> int:
        """Tasks in a terminal state."""
        return self.succeeded + self.failed + self.cancelled + self.blocked


class _Run:
    """Scheduler state of one start or rerun (see the module docstring)."""

    def __init__(self, gen: int, members: list[int], n: int) -> None:
        self.gen = gen
        self.members = members
        self.left = [0] * n
        self.bad: list[list[str] | None] = [None] * n
        self.phase = [_FINISHED] * n
        self.ready: collections.deque[int] = collections.deque()
        self.inflight = 0
        self.unfinished = len(members)
        self.queue: queue.SimpleQueue[tuple[str, int, int]] = queue.SimpleQueue()
        #: held by whichever thread runs the scheduling step now (one at a time)
        self.drain = threading.Lock()
        #: the roots were decided: events may be handled from now on
        self.prepared = False
        #: the run's end was handled
        self.closed = False
        #: why the run is being stopped ('cancelled', 'timed out after 5s'), or None
        self.stopping: str | None = None
        #: stop finally tasks too
        self.force = False
        self.timer: Timer | None = None


class GraphRun:
    """A graph of tasks running in the background: the handle a cell keeps.

    ``start()`` submits every task, releases the roots and returns at once;
    each task's end releases its dependents, on the thread that ended it. Read
    ``status`` ('pending', 'running', 'done'), ``ok`` (False until done, then
    True iff every required task succeeded), ``reason``, ``error``,
    ``statistics()``; address tasks as ``graph["test"]``, ``graph.test`` or
    ``graph.tasks``; call ``wait(timeout)``, ``cancel()``, ``rerun()``.

    ``on_submit(node, task)`` is called for each task as it is submitted,
    before any of them can run (a caller keeps its own facts about them).
    ``timeout`` (seconds) stops the graph as ``cancel()`` does when exceeded;
    ``max_parallel`` caps how many of its tasks run at once, on top of the
    executor's worker cap. A graph can be an ``after`` dependency of a task
    (``executor.submit(spec, after=[graph])``): it counts as succeeded when ``ok``.
    """

    __slots__ = (
        "executor", "name", "nodes", "timeout", "max_parallel", "_index", "_succ", "_order", "_specs",
        "_runners", "_tasks", "_lock", "_status", "_ok", "_reason", "_gen", "_run", "_done", "_callbacks",
        "_listeners",
        "_started", "_finished", "_on_submit",
    )

    def __init__(
        self,
        executor: Executor,
        name: str,
        nodes: Sequence[GraphNode],
        *,
        timeout: float | None = None,
        max_parallel: int | None = None,
        on_submit: Callable[[GraphNode, Task], None] | None = None,
    ) -> None:
        check_name(name, "graph")
        if timeout is not None:
            try:
                timeout = check_seconds("timeout", timeout)
            except SpecError as e:
                raise SpecError(f"graph {name}: {e}") from None
        if max_parallel is not None and not (isinstance(max_parallel, int) and max_parallel >= 1):
            raise SpecError(f"graph {name}: max_parallel must be a whole number >= 1, not {max_parallel!r}")
        nodes = tuple(nodes)
        order = check_graph(nodes)
        for n in nodes:
            if n.name in RESERVED_NAMES:
                raise SpecError(
                    f"{where_of(n)}task name {n.name} is taken by the graph handle itself ({name}.{n.name}): "
                    "choose another name"
                )
        self.executor = executor
        self.name = name
        self.nodes = nodes
        self.timeout = timeout
        self.max_parallel = max_parallel
        #: called with each node and its task right after the task is submitted (held), before any runs
        self._on_submit = on_submit
        self._index = {n.name: i for i, n in enumerate(nodes)}
        self._succ: list[list[int]] = [[] for _ in nodes]
        for i, n in enumerate(nodes):
            for d in n.deps:
                self._succ[self._index[d]].append(i)
        self._order = [self._index[x] for x in order]
        self._runners = [NodeRunner(n, has_dependents=bool(self._succ[i])) for i, n in enumerate(nodes)]
        self._specs = [
            TaskSpec(
                r, timeout=n.timeout, retries=n.retries, backoff=n.backoff, stall=n.stall, backend=n.backend,
            )
            for n, r in zip(nodes, self._runners, strict=True)
        ]
        self._tasks: list[Task] = []
        self._lock = threading.Lock()
        self._status = "pending"
        self._ok = False
        self._reason: str | None = None
        self._gen = 0
        self._run: _Run | None = None
        self._done = threading.Event()
        self._callbacks: list[Callable[[GraphRun], None]] = []
        self._listeners: list[Callable[[GraphRun], None]] = []
        self._started: float | None = None
        self._finished: float | None = None

    # ---- starting ------------------------------------------------------
    def start(self) -> GraphRun:
        """Submit every task (held) and start scheduling; returns at once."""
        with self._lock:
            if self._status != "pending":
                raise SpecError(f"graph {self.name} was already started: use rerun() to run it again")
            self._status = "running"
            run = self._new_run_locked(list(range(len(self.nodes))))
        tasks: list[Task] = []
        try:
            for node, spec in zip(self.nodes, self._specs, strict=True):
                t = self.executor.submit(spec, hold=True)
                t.name = f"{self.name}.{node.name}"
                tasks.append(t)
                if self._on_submit is not None:
                    self._on_submit(node, t)
        except BaseException:
            for t in tasks:
                self.executor.cancel(t, f"graph {self.name} could not start")
            with self._lock:
                self._status, self._run = "pending", None
            raise
        self._tasks = tasks
        self._started = time.time()
        self._launch(run)
        return self

    def _new_run_locked(self, members: list[int]) -> _Run:
        self._gen += 1
        run = self._run = _Run(self._gen, members, len(self.nodes))
        self._reason = None
        self._ok = False
        self._done.clear()
        return run

    def _launch(self, run: _Run) -> None:
        """Start ``run``: done-callbacks, the graph timeout, then the first scheduling step here.

        The first step (count dependencies, release the roots) costs O(nodes)
        and starts nothing that blocks, so it runs on the caller's thread; a
        thread of its own cost more than a small graph's whole run.
        """
        for i in run.members:
            self._tasks[i].add_done_callback(lambda _t, i=i, g=run.gen: self._feed(run, (_DONE, g, i)))
        if self.timeout is not None:
            run.timer = self.executor.timers.schedule(
                self.timeout, lambda: self._stop(run, f"graph {self.name} timed out after {self.timeout:g}s")
            )
        self._schedule(run)

    # ---- scheduling ----------------------------------------------------
    def _schedule(self, run: _Run) -> None:
        """Decide the roots, then hand the loop to whoever feeds it."""
        with run.drain:
            try:
                self._prepare(run)
            except BaseException:  # a bug here must not leave the graph running for ever
                self._scheduler_failed(run)
            run.prepared = True
        self._drain(run)

    def _scheduler_failed(self, run: _Run) -> None:
        """A bug in the scheduling step: log it, cancel every task of the run, end the run."""
        log.exception("scheduler of graph %s failed", self.name)
        run.unfinished = 0
        for i in run.members:
            self.executor.cancel(self._tasks[i], f"graph {self.name}: scheduler failed")

    def _feed(self, run: _Run, item: tuple[str, int, int]) -> None:
        """A done-callback or a stop: queue ``item``, and run the scheduling step unless another thread does."""
        run.queue.put(item)
        if run.prepared:
            self._drain(run)

    def _drain(self, run: _Run) -> None:
        """The graphlib loop's step: handle what is queued, one thread at a time (the thread that fed it).

        Handling the end of a task on the thread that ended it saves two
        thread wake-ups per task; the lock keeps the loop single-threaded, and
        what arrives while another thread holds it is handled by that thread
        before it lets go (the queue is checked again after the release).
        """
        q = run.queue
        while True:
            if not run.drain.acquire(blocking=False):
                return
            finished = False
            try:
                while run.unfinished:
                    try:
                        what, gen, i = q.get_nowait()
                    except queue.Empty:
                        break
                    if gen != run.gen:
                        continue
                    if what == _DONE:
                        self._on_done(run, i)
                    else:
                        self._on_stop(run)
            except BaseException:  # a bug here must not leave the graph running for ever
                self._scheduler_failed(run)
            finally:
                if run.unfinished == 0 and not run.closed:
                    run.closed = finished = True
                run.drain.release()
            if finished:
                self._finish(run)
                return
            if run.closed or q.empty():
                return

    def _prepare(self, run: _Run) -> None:
        """Count each member's unfinished dependencies; decide the roots."""
        member = run.phase  # _FINISHED marks non-members (kept tasks) until set below
        for i in run.members:
            member[i] = _WAITING
        for i in run.members:
            run.left[i] = sum(1 for d in self.nodes[i].deps if member[self._index[d]] == _WAITING)
        for i in run.members:
            if run.left[i] == 0:
                self._decide(run, i)
        self._pump(run)

    def _on_done(self, run: _Run, i: int) -> None:
        """Task ``i`` ended: the graphlib ``done`` step."""
        phase = run.phase
        if phase[i] == _FINISHED:
            return
        if phase[i] == _RELEASED:
            run.inflight -= 1
        phase[i] = _FINISHED
        run.unfinished -= 1
        good = self._tasks[i].state is TaskState.SUCCEEDED
        name = self.nodes[i].name
        for s in self._succ[i]:
            if phase[s] != _WAITING:
                continue
            run.left[s] -= 1
            if not good:
                bad = run.bad[s]
                if bad is None:
                    bad = run.bad[s] = []
                bad.append(name)
            if run.left[s] == 0:
                self._decide(run, s)
        self._pump(run)

    def _decide(self, run: _Run, i: int) -> None:
        """Every dependency of ``i`` is over: make it ready, or block it."""
        node, task = self.nodes[i], self._tasks[i]
        if node.finally_:
            if run.force:
                self.executor.block(task, [self.name], run.stopping)
                return
        elif run.bad[i]:
            self.executor.block(task, list(run.bad[i] or ()))
            return
        elif run.stopping is not None:
            self.executor.block(task, [self.name], run.stopping)
            return
        run.phase[i] = _READY
        run.ready.append(i)

    def _pump(self, run: _Run) -> None:
        """Release ready nodes while this graph's parallel limit allows."""
        cap = self.max_parallel
        while run.ready and (cap is None or run.inflight < cap):
            i = run.ready.popleft()
            if run.phase[i] != _READY:
                continue
            node, task = self.nodes[i], self._tasks[i]
            if run.stopping is not None and (run.force or not node.finally_):
                self.executor.block(task, [self.name], run.stopping)
                continue
            run.phase[i] = _RELEASED
            run.inflight += 1
            deps = {d: self._tasks[self._index[d]] for d in node.deps}
            self._runners[i].prepare(Upstream(node.name, deps), tuple(t.id for t in deps.values()))
            self.executor.release(task)

    def _on_stop(self, run: _Run) -> None:
        """Block pending tasks, cancel running ones; finally tasks are spared unless forced."""
        for i in run.members:
            if run.phase[i] == _FINISHED or (self.nodes[i].finally_ and not run.force):
                continue
            task = self._tasks[i]
            if task.state is TaskState.PENDING:
                self.executor.block(task, [self.name], run.stopping)
            else:
                self.executor.cancel(task, run.stopping or "cancelled")

    def _finish(self, run: _Run) -> None:
        if run.timer is not None:
            run.timer.cancel()
        # every dependent of this run was released or blocked: what a backend kept for them can go
        self.executor.forget_results(self._tasks[i] for i in run.members if self._succ[i])
        ok = all(
            t.state is TaskState.SUCCEEDED for n, t in zip(self.nodes, self._tasks, strict=True) if not n.optional
        )
        with self._lock:
            if self._run is not run:
                return
            self._ok = ok
            self._reason = run.stopping
            self._status = "done"
            self._finished = time.time()
            callbacks, self._callbacks = self._callbacks, []
            callbacks += self._listeners
            self._done.set()
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                log.exception("done callback of graph %s failed", self.name)

    # ---- stopping ------------------------------------------------------
    def cancel(self, force: bool = False) -> bool:
        """Stop the graph; returns at once. False if it was not running.

        Running tasks are cancelled and pending ones blocked, then finally
        tasks run once their dependencies are over (cleanup). ``force`` also
        cancels finally tasks (for a cleanup that hangs).
        """
        with self._lock:
            run = self._run
            if self._status != "running" or run is None:
                return False
        self._stop(run, f"graph {self.name} cancelled", force)
        return True

    def _stop(self, run: _Run, reason: str, force: bool = False) -> None:
        with self._lock:
            if self._run is not run or self._status != "running":
                return
            if run.stopping is None:
                run.stopping = reason
            run.force = run.force or force
        # cancel what runs now, so the caller sees it at once; the scheduler does the rest
        tasks = self._tasks
        for i in run.members:
            if i >= len(tasks):  # start() is still submitting: the scheduler blocks them all
                break
            t = tasks[i]
            if t.state in (TaskState.QUEUED, TaskState.RUNNING) and (force or not self.nodes[i].finally_):
                self.executor.cancel(t, reason)
        self._feed(run, (_STOP, run.gen, -1))

    # ---- running again -------------------------------------------------
    def rerun(self) -> GraphRun:
        """Run again what did not succeed; returns at once.

        Succeeded tasks keep their results; failed, cancelled and blocked ones
        run again, and so does every task one of whose dependencies reruns
        (a finally task after a rerun dependency, above all). Raises
        ``TaskNotDone`` while the graph runs.
        """
        with self._lock:
            if self._status != "done":
                raise TaskNotDone(
                    f"graph {self.name} is {self._status}: "
                    + ("start() it first" if self._status == "pending" else "wait for it or cancel() it first")
                )
            again = [False] * len(self.nodes)
            for i in self._order:
                again[i] = self._tasks[i].state is not TaskState.SUCCEEDED or any(
                    again[self._index[d]] for d in self.nodes[i].deps
                )
            members = [i for i in range(len(self.nodes)) if again[i]]
            if not members:
                return self
            self._status = "running"
            run = self._new_run_locked(members)
            self._started, self._finished = time.time(), None
        for i in members:
            self.executor.reset(self._tasks[i])
        self._launch(run)
        return self

    # ---- reading -------------------------------------------------------
    @property
    def status(self) -> str:
        """'pending' (not started), 'running' or 'done'."""
        return self._status

    @property
    def ok(self) -> bool:
        """False until the graph is done; then True iff every required task succeeded."""
        return self._status == "done" and self._ok

    @property
    def reason(self) -> str | None:
        """Why the last run was stopped ('graph g cancelled', 'graph g timed out after 5s'), or None."""
        return self._reason

    @property
    def state(self) -> TaskState:
        """The graph as one task state (for ``after=``): PENDING, RUNNING, then SUCCEEDED if ``ok`` else FAILED."""
        if self._status == "pending":
            return TaskState.PENDING
        if self._status == "running":
            return TaskState.RUNNING
        return TaskState.SUCCEEDED if self._ok else TaskState.FAILED

    @property
    def label(self) -> str:
        """The graph's name."""
        return self.name

    @property
    def error(self) -> str | None:
        """What went wrong, in one line (None while running or when ok)."""
        if self._status != "done" or self._ok:
            return None
        bad = [
            f"{n.name} {t.status}" + (f" ({t.error})" if t.error and t.state is not TaskState.BLOCKED else "")
            for n, t in zip(self.nodes, self._tasks, strict=True)
            if t.state is not TaskState.SUCCEEDED and not n.optional
        ]
        head = f"{self._reason}; " if self._reason else ""
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        return head + (shown or "stopped")

    @property
    def elapsed(self) -> float:
        """Seconds since the current run started (its duration once done)."""
        if self._started is None:
            return 0.0
        return (self._finished or time.time()) - self._started

    @property
    def tasks(self) -> Mapping[str, Task]:
        """The tasks by name, in the order written (empty before ``start``)."""
        return MappingProxyType({n.name: t for n, t in zip(self.nodes, self._tasks, strict=False)})

    def done(self) -> bool:
        """True once the graph has finished (every task of the run is over)."""
        return self._status == "done"

    def dependents(self, name: str) -> list[str]:
        """The names of the tasks that run after ``name``."""
        return [self.nodes[s].name for s in self._succ[self._node(name)]]

    def statistics(self) -> GraphStats:
        """How many tasks are in each state now."""
        c = collections.Counter(t.state for t in self._tasks)
        return GraphStats(
            total=len(self.nodes),
            pending=c[TaskState.PENDING] + (len(self.nodes) - len(self._tasks)),
            queued=c[TaskState.QUEUED],
            running=c[TaskState.RUNNING],
            succeeded=c[TaskState.SUCCEEDED],
            failed=c[TaskState.FAILED],
            cancelled=c[TaskState.CANCELLED],
            blocked=c[TaskState.BLOCKED],
        )

    def _node(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            raise KeyError(f"graph {self.name} has no task {name!r}" + suggest(name, list(self._index)))
        return i

    def __getitem__(self, name: str) -> Task:
        i = self._node(name)
        if not self._tasks:
            raise TaskNotDone(f"graph {self.name} has not started: its tasks exist once start() runs")
        return self._tasks[i]

    def __getattr__(self, name: str) -> Task:
        if name.startswith("__") or name in GraphRun.__slots__:
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(e.args[0]) from None

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(self._index))

    # ---- waiting -------------------------------------------------------
    def wait(self, timeout: float | None = None) -> GraphRun:
        """Block until the graph is done, at most ``timeout`` seconds (``WaitTimeout`` then).

        As for tasks, waiting from inside a task is refused, and a wait on the
        kernel's main thread hands over what it waited for (the executor's
        wait hooks run). ``KeyboardInterrupt`` stops the wait, not the graph.
        """
        check_not_inside_task()
        if self._status == "pending":
            raise TaskNotDone(f"graph {self.name} has not started: call start() first")
        end = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                running = [n.name for n, t in zip(self.nodes, self._tasks, strict=True) if t.state.active]
                shown = ", ".join(running[:8]) + (", ..." if len(running) > 8 else "")
                raise WaitTimeout(f"waited {timeout:g}s for graph {self.name}; not finished: {shown or '-'}")
            self._done.wait(0.25 if left is None else min(left, 0.25))
        try:
            self.executor.wait(self._tasks, timeout=0)  # runs the wait hooks (delivery)
        except WaitTimeout:  # a rerun began meanwhile
            pass
        return self

    def add_done_callback(self, fn: Callable[[GraphRun], None]) -> None:
        """Call ``fn(graph)`` once the current run is done (at once if it is)."""
        with self._lock:
            if self._status != "done":
                self._callbacks.append(fn)
                return
        fn(self)

    def add_run_listener(self, fn: Callable[[GraphRun], None]) -> None:
        """Call ``fn(graph)`` each time a run (the first, and every ``rerun``) is done."""
        with self._lock:
            self._listeners.append(fn)

    def __repr__(self) -> str:
        s = self.statistics()
        counts = ", ".join(
            f"{getattr(s, k)} {k}" for k in ("running", "queued", "pending", "succeeded", "failed", "cancelled",
                                             "blocked") if getattr(s, k)
        )
        ok = f" ok={self.ok}" if self._status == "done" else ""
        return f"<GraphRun {self.name} {self._status}{ok}: {counts or 'no tasks'}>"


#: names a task may not take: the handle's own attributes (graph.wait is the method)
RESERVED_NAMES = frozenset(n for n in dir(GraphRun) if not n.startswith("__"))
