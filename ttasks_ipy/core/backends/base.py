"""The backend interface: where an attempt runs, and the one channel back from it.

A backend runs jobs somewhere and reports back. It has five methods:

* ``submit(job, events) -> handle`` starts the job and returns at once;
* ``cancel(handle)`` returns at once and ends the work for real where the
  backend can (a thread: the runner's registered aborts and an exception
  raised in pure-Python code; a worker process: the process is killed; a
  cluster: a cancel signal the remote side watches);
* ``shutdown()`` releases what the backend holds, ``forget(task_ids)`` the
  results it kept for later jobs (``Job.keep``);
* ``statistics()`` returns a frozen snapshot.

``JobEvents`` is the only way back: ``output``, ``progress``, ``placed``
(where the job runs, once known) and ``finished`` (exactly once, with the
value or the error). The executor gives each attempt its own ``JobEvents``;
calls for an attempt that lost a race (cancelled, timed out) are ignored
there, so a backend never has to care. A backend whose jobs leave the
kernel's process (``remote = True``) pickles the runner with cloudpickle; a
runner that cannot travel fails its task with one line naming what could not
be sent. Nothing here depends on how the job is run, so threads, our worker
processes and a cluster implement the same interface.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..output import TaskOutput
    from ..spec import Runner


class JobEvents(ABC):
    """What a running job reports, from whatever thread the backend uses."""

    @abstractmethod
    def output(self, stream: str, text: str) -> None:
        """Text written to the job's 'stdout' or 'stderr'."""

    @abstractmethod
    def progress(self, percent: float | None, message: str | None) -> None:
        """Progress (0-100) and a short message."""

    @abstractmethod
    def placed(self, where: str | None, pid: int | None) -> None:
        """Where the job runs: a description ('pid 123', 'tcp://10.0.0.5:4321') and a local pid if any."""

    @abstractmethod
    def finished(self, value: Any = None, error: BaseException | None = None) -> None:
        """The job ended: with ``value``, or with ``error`` (``TaskCancelled`` for a job that stopped on cancel)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt to run: the runner, and what the backend needs to say whose it is.

    ``store`` is the task's output store in the kernel's process (a local
    backend lends it to runners that read their own output back); ``services``
    are the kernel's timers and reaper for runners that start processes here.

    ``after`` and ``keep`` describe a graph's edges to a backend that can use
    them (a cluster: a dependent runs after, and near, its inputs, which move
    worker to worker): ``after`` names the tasks whose results this job reads,
    all of them finished; ``keep`` says later jobs will name this job's task
    in their ``after``, so its result may be kept where it was made until
    ``Backend.forget``. A backend that keeps nothing ignores both; the values
    a job reads always travel with its runner as well.
    """

    runner: Runner
    label: str
    task_id: int
    attempt: int
    store: TaskOutput | None = None
    services: Any = None
    after: tuple[int, ...] = ()
    keep: bool = False


class JobHandle:
    """What ``submit`` returns: opaque to the caller, meaningful to the backend that made it."""

    __slots__ = ()


@dataclass(frozen=True)
class BackendStats:
    """A snapshot of a backend: jobs running now and in all, and backend-specific counts."""

    name: str
    running: int
    submitted: int
    extra: tuple[tuple[str, Any], ...] = ()


class Backend(ABC):
    """Runs jobs somewhere and reports back through their ``JobEvents``."""

    #: the name a ``TaskSpec.backend`` uses for it
    name: ClassVar[str] = "backend"
    #: True when jobs leave the kernel's process (runners and results are pickled)
    remote: ClassVar[bool] = False

    @abstractmethod
    def submit(self, job: Job, events: JobEvents) -> JobHandle:
        """Start ``job``; return at once. ``events.finished`` is called exactly once, from any thread."""

    @abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job of ``handle``; return at once. Its ``finished`` still comes (or came) once."""

    def forget(self, task_ids: Iterable[int]) -> None:
        """Drop the results kept for these tasks (``Job.keep``): no later job reads them here."""

    def shutdown(self) -> None:
        """Release what the backend holds (threads, processes, connections)."""

    @abstractmethod
    def statistics(self) -> BackendStats:
        """A frozen snapshot of the backend's load."""
