"""What to run and how: ``TaskSpec``, and the ``Runner`` interface each task kind implements."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import SpecError

if TYPE_CHECKING:
    from .context import RunContext


class Runner(ABC):
    """Runs one attempt of a task. One instance per task; ``run`` may be called again on retry."""

    #: 'bash', 'python', 'prompt', 'call'
    kind: str = "call"

    @abstractmethod
    def run(self, ctx: RunContext) -> Any:
        """Run the attempt on the calling (worker) thread; return the value or raise.

        Output goes through ``ctx.output(stream, text)``, progress through
        ``ctx.progress``. Raising ``TaskCancelled`` after ``ctx.cancelled`` is set
        is how a cooperative runner stops.
        """

    def cancel(self, ctx: RunContext) -> None:
        """Stop the attempt running under ``ctx``; must return at once (default: cooperative only)."""

    def describe(self) -> str:
        """One line saying what runs, for lists and notices."""
        return self.kind


@dataclass
class TaskSpec:
    """A task as the user asked for it. Validated on creation; raises ``SpecError``."""

    runner: Runner
    name: str | None = None
    timeout: float | None = None
    retries: int = 0
    backoff: float = 1.0
    stall: float | None = None
    service: bool = False
    ready: str | None = None
    #: free-form facts the kernel layer keeps with the task (delivery targets, source)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name is not None and not self.name.isidentifier():
            raise SpecError(f"task name {self.name!r} is not an identifier: use letters, digits and _")
        for label in ("timeout", "stall"):
            v = getattr(self, label)
            if v is not None and not v > 0:
                raise SpecError(f"{label} must be a positive number of seconds, not {v!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise SpecError(f"retries must be a whole number >= 0, not {self.retries!r}")
        if not self.backoff >= 0:
            raise SpecError(f"backoff must be >= 0 seconds, not {self.backoff!r}")
        if self.ready is not None:
            try:
                self._ready_re = re.compile(self.ready)
            except re.error as e:
                raise SpecError(f"ready pattern {self.ready!r} is not a valid regular expression: {e}") from e
        if self.service and self.stall is not None:
            raise SpecError("a service has no stall detection: drop stall or service")

    @property
    def kind(self) -> str:
        """The task kind, from the runner."""
        return self.runner.kind
