"""Python that travels: ``PortablePython`` runs a body in another process, with ``check_picklable`` inputs.

A body for a worker process (or a cluster worker) cannot read the user's
namespace there: the names it reads are pickled with cloudpickle at dispatch
(``check_picklable``), so a value that cannot travel is a one-line error naming
the variable before anything starts. Values too large to pickle at dispatch
within the budget are pickled when the runner itself is pickled, off the main
thread. The runner is pickled whole and run where the backend puts it; it
returns the expression's value, or a dict of the names the body assigns (only
``names``, if given: an unpicklable name not asked for does not fail the task).
"""
from __future__ import annotations

import asyncio
import functools
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..errors import SpecError
from ..spec import Runner
from .python import TASK_BUILTINS, PyBody, compile_body, single_assigned

if TYPE_CHECKING:
    from ..context import TaskContext

#: bytes of pickled inputs checked (and kept) at dispatch; larger values are pickled in the run
DEFAULT_BUDGET = 10_000_000
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class _OverBudget(Exception):
    pass


class _CappedBuffer:
    """A write-only file that refuses to grow past ``cap`` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self.chunks: list[bytes] = []

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        if self.size > self.cap:
            raise _OverBudget
        self.chunks.append(bytes(data))
        return n


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text.splitlines()[0] if text.strip() else type(e).__name__


def _cannot_send(name: str, e: BaseException) -> SpecError:
    return SpecError(f"cannot send {name!r} to a worker process: {_one_line(e)}")


@dataclass
class Inputs:
    """The bound names on their way to a worker: pickled ones, and values too big to pickle at dispatch."""

    pickled: dict[str, bytes]
    deferred: dict[str, Any]

    def complete(self) -> dict[str, bytes]:
        """Pickle what was deferred (call it off the main thread); raises ``SpecError`` naming the variable."""
        for name in list(self.deferred):
            try:
                self.pickled[name] = cloudpickle.dumps(self.deferred[name], protocol=_PROTOCOL)
            except Exception as e:
                raise _cannot_send(name, e) from None
            del self.deferred[name]
        return self.pickled

    @property
    def size(self) -> int:
        """Bytes pickled so far."""
        return sum(len(b) for b in self.pickled.values())


def check_picklable(bound: Mapping[str, Any], budget_bytes: int = DEFAULT_BUDGET) -> Inputs:
    """Pickle the values of ``bound`` now, up to ``budget_bytes`` in all; the rest is deferred.

    Raises ``SpecError("cannot send 'lock' to a worker process: TypeError: ...")``
    for the first value that cannot be pickled within the budget. A value
    whose pickle would pass the remaining budget is left for
    ``Inputs.complete()``, which the run calls on its own thread. Each value
    is pickled on its own: two names bound to one object arrive as two copies.
    """
    pickled: dict[str, bytes] = {}
    deferred: dict[str, Any] = {}
    left = budget_bytes
    for name in sorted(bound):
        value = bound[name]
        buf = _CappedBuffer(left)
        try:
            cloudpickle.dump(value, buf, protocol=_PROTOCOL)
        except _OverBudget:
            deferred[name] = value
            continue
        except Exception as e:
            raise _cannot_send(name, e) from None
        pickled[name] = b"".join(buf.chunks)
        left -= buf.size
    return Inputs(pickled, deferred)


@functools.lru_cache(maxsize=64)
def _compiled(source: str, filename: str, first_line: int) -> PyBody:
    """The body compiled where it runs, once per process for the same text (a loop's tasks, a retry)."""
    return compile_body(source, filename, first_line=first_line)


class PortablePython(Runner):
    """A Python body with pickled inputs, to run in another process (``--process``, a cluster).

    Cancel is hard: the backend ends the process. ``current_task()`` inside
    the body is the remote context (``progress()`` reaches the kernel).
    """

    kind = "python"
    #: it travels as strings, flags and the inputs, pickled already (``__reduce__``)
    plain_pickle = True

    def __init__(
        self,
        body: PyBody,
        bound: Mapping[str, Any],
        *,
        budget_bytes: int = DEFAULT_BUDGET,
        first_line: int | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.source = body.source
        self.filename = body.filename
        self.first_line = first_line or body.first_line
        self.is_expression = body.is_expression
        #: for statements: the assigned names to send back (None: every name the body assigns)
        self.names = None if names is None else list(names)
        self.inputs = check_picklable(bound, budget_bytes)
        self._body: PyBody | None = body

    def dependency_value(self, value: Any) -> Any:
        """As a thread's Python task: a statement that assigns one name gives that name's value."""
        names = self.names if self.names is not None else (self._body.assigns if self._body is not None else ())
        return single_assigned(value, self.is_expression, list(names))

    def describe(self) -> str:
        src = self.source.strip()
        return src.splitlines()[0] if src else ""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Plain values only (the inputs pickled already); the code is compiled again where it runs."""
        pickled = self.inputs.complete()  # raises SpecError naming a value that cannot be sent
        return _arrived, (self.source, self.filename, self.first_line, self.is_expression, self.names,
                          dict(pickled))

    def run(self, ctx: TaskContext) -> Any:
        body = self._body
        if body is None:
            body = self._body = _compiled(self.source, self.filename, self.first_line)
        g: dict[str, Any] = {"__builtins__": TASK_BUILTINS, "__name__": "__main__"}
        for name, data in self.inputs.complete().items():
            try:
                g[name] = cloudpickle.loads(data)
            except Exception as e:
                raise SpecError(f"cannot receive {name!r} in the worker process: {_one_line(e)}") from None
        value = eval(body.code, g)
        if body.is_async:
            value = asyncio.run(value)
        if body.is_expression:
            return value
        wanted = body.assigns if self.names is None else self.names
        return {n: g[n] for n in wanted if n in g}


def _arrived(source: str, filename: str, first_line: int, is_expression: bool, names: list[str] | None,
             pickled: dict[str, bytes]) -> PortablePython:
    """A ``PortablePython`` rebuilt from what ``__reduce__`` sent (in the worker process)."""
    runner = PortablePython.__new__(PortablePython)
    runner.source, runner.filename, runner.first_line = source, filename, first_line
    runner.is_expression, runner.names = is_expression, names
    runner.inputs = Inputs(pickled, {})
    runner._body = None
    return runner


__all__ = ["DEFAULT_BUDGET", "Inputs", "PortablePython", "check_picklable"]
