"""What to run and how: ``TaskSpec``, and the ``Runner`` interface each task kind implements."""
from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .names import check_name

if TYPE_CHECKING:
    from .context import TaskContext

#: the longest timeout, stall or backoff accepted (a year): beyond it a number is a mistake
MAX_SECONDS = 365 * 24 * 3600.0


class Runner(ABC):
    """Runs one attempt of a task. One instance per task; ``run`` may be called again on retry.

    A runner does not know where it runs: the backend hands it a
    ``TaskContext`` that is local (a thread of the kernel) or forwards output
    and progress from another process. A runner that blocks registers how to
    stop itself with ``ctx.on_cancel(abort)``. Runners of backends that leave
    the kernel's process are pickled (``plain_pickle``).
    """

    #: 'bash', 'python', 'prompt'
    kind: str = "python"
    #: False for runners that wait on the network, not the CPU (prompts): no worker slot
    needs_worker_slot: bool = True
    #: ids of the tasks whose results this attempt reads (a graph task: its dependencies), for ``Job.after``
    after_tasks: tuple[int, ...] = ()
    #: True when later attempts will name this task in their ``after_tasks`` (a graph task with dependents)
    has_dependents: bool = False
    #: True when the standard ``pickle`` can send this runner to another process as it is: its state is
    #: plain data and its class importable there (backends then skip cloudpickle's slower machinery)
    plain_pickle: bool = False

    @abstractmethod
    def run(self, ctx: TaskContext) -> Any:
        """Run the attempt; return the value or raise.

        Output goes through ``ctx.output(stream, text)``, progress through
        ``ctx.progress``. Raising ``TaskCancelled`` after ``ctx.cancelled`` is set
        is how a runner says it stopped.
        """

    def describe(self) -> str:
        """One secret-free line saying what runs, for lists, notices and records."""
        return self.kind

    def dependency_value(self, value: Any) -> Any:
        """What a dependent task sees as the value ``value`` of this runner (``upstream.X.value``)."""
        return value

    def resolve(self) -> Runner:
        """The runner that does the work of the attempt starting now (a stand-in returns the real one)."""
        return self


def check_seconds(label: str, value: float | None, *, allow_zero: bool = False) -> float | None:
    """``value`` if it is a finite number of seconds within bounds (> 0, or >= 0), else ``SpecError``."""
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero) or value > MAX_SECONDS:
        what = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise SpecError(f"{label} must be {what}, at most {MAX_SECONDS:.0f} (a year), not {value!r}")
    return float(value)


@dataclass
class TaskSpec:
    """A task as the user asked for it. Validated on creation; raises ``SpecError``.

    ``backend`` names where it runs: 'thread' (default), 'process', or any
    other backend the executor was given.
    """

    runner: Runner
    name: str | None = None
    timeout: float | None = None
    retries: int = 0
    backoff: float = 1.0
    stall: float | None = None
    service: bool = False
    ready: str | None = None
    backend: str = "thread"

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name, "task")
        if self.timeout is not None:
            self.timeout = check_seconds("timeout", self.timeout)
        if self.stall is not None:
            self.stall = check_seconds("stall", self.stall)
        if self.backoff != 1.0 or self.backoff.__class__ is not float:  # (the default needs no check)
            self.backoff = check_seconds("backoff", self.backoff, allow_zero=True) or 0.0
        if self.retries.__class__ is not int or not 0 <= self.retries <= 1000:
            raise SpecError(f"retries must be a whole number from 0 to 1000, not {self.retries!r}")
        self.ready_pattern: re.Pattern[str] | None = None
        if self.ready is not None:
            try:
                self.ready_pattern = re.compile(self.ready)
            except re.error as e:
                raise SpecError(f"ready pattern {self.ready!r} is not a valid regular expression: {e}") from e
        if self.service and self.stall is not None:
            raise SpecError("a service has no stall detection: drop stall or service")

    @property
    def kind(self) -> str:
        """The task kind, from the runner."""
        return self.runner.kind
