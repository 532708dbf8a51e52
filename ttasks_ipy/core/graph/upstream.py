"""What a graph task sees of its dependencies: ``Upstream``, a mapping of ``UpstreamResult``."""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..states import TaskState
from ..task import Task


# ---- what a task sees of its dependencies --------------------------------
@dataclass(frozen=True)
class UpstreamResult:
    """A dependency's outcome as a dependent sees it.

    ``value`` is the task's value (an expression's value, a dict of the names
    a statement assigned, a command's ``CommandResult`` whose ``str()`` is its
    output), ``output``/``stderr`` its text, ``returncode`` a command's exit
    status (None for other kinds), ``status`` its final state as a word,
    ``error`` its failure in one line (None when it succeeded).
    """

    name: str
    status: str
    value: Any
    output: str
    stderr: str
    returncode: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True if the dependency succeeded."""
        return self.status == TaskState.SUCCEEDED.value

    @classmethod
    def of(cls, name: str, task: Task) -> UpstreamResult:
        """A snapshot of ``task`` now."""
        value = task.value
        return cls(
            name=name,
            status=task.status,
            value=task.spec.runner.dependency_value(value) if task.has_value else value,
            output=task.output,
            stderr=task.stderr,
            returncode=getattr(value, "returncode", None) if task.kind == "bash" else None,
            error=task.error,
        )


class Upstream(Mapping[str, UpstreamResult]):
    """A task's direct dependencies by name: ``upstream.build`` or ``upstream["build"]``.

    Each gives an ``UpstreamResult`` (read when first asked for, then kept).
    Pickles as plain results, so it can go to a worker process.
    """

    __slots__ = ("_owner", "_tasks", "_results")

    def __init__(self, owner: str, tasks: Mapping[str, Task] | None = None,
                 results: Mapping[str, UpstreamResult] | None = None) -> None:
        self._owner = owner
        self._tasks = dict(tasks or {})
        self._results: dict[str, UpstreamResult] = dict(results or {})
        for name in self._results:
            self._tasks.setdefault(name, None)  # type: ignore[arg-type]

    def __getitem__(self, name: str) -> UpstreamResult:
        r = self._results.get(name)
        if r is not None:
            return r
        if name not in self._tasks:
            raise KeyError(self._unknown(name))
        r = self._results[name] = UpstreamResult.of(name, self._tasks[name])
        return r

    def __getattr__(self, name: str) -> UpstreamResult:
        if name.startswith("__") or name in Upstream.__slots__:
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(self._unknown(name)) from None

    def for_commands(self) -> Upstream:
        """The dependencies as a one-line command reads them: ``output`` and ``stderr`` without
        their trailing newlines, as bash's ``$(…)`` gives a command's output."""
        results = {}
        for n in self._tasks:
            r = self[n]
            results[n] = dataclasses.replace(r, output=r.output.rstrip("\n"), stderr=r.stderr.rstrip("\n"))
        return Upstream(self._owner, None, results)

    def _unknown(self, name: str) -> str:
        deps = ", ".join(self._tasks) or "nothing"
        close = difflib.get_close_matches(name, list(self._tasks), n=1)
        hint = f": did you mean {close[0]!r}?" if close else ""
        return f"upstream of {self._owner} has no {name!r} (it runs after {deps}){hint}"

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __dir__(self) -> list[str]:
        return [*self._tasks, "get", "items", "keys", "values"]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Upstream, (self._owner, None, {n: self[n] for n in self._tasks}))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}={self._results[n].status if n in self._results else self._tasks[n].status}" for n in self._tasks
        )
        return f"Upstream({parts})"
