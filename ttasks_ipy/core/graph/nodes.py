"""Describing a graph: ``GraphNode`` (a task and what it runs after), its runner, and ``check_graph``."""
from __future__ import annotations

import difflib
import graphlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SpecError
from ..names import check_name
from ..spec import Runner

if TYPE_CHECKING:
    from ..context import TaskContext
    from .upstream import Upstream

#: ``(upstream) -> Runner``: builds a node's runner when the node is released
RunnerFactory = Callable[["Upstream"], Runner]


# ---- describing a graph --------------------------------------------------
@dataclass(frozen=True)
class GraphNode:
    """One task of a graph, as described (nothing runs until a ``GraphRun`` starts).

    ``make_runner`` is a ``Runner`` (used as is) or a factory
    ``(upstream) -> Runner`` called when the node is released, so the runner
    sees its dependencies' results. ``kind`` is the task kind ('bash',
    'python', 'prompt', 'call'); for a ``Runner`` it is taken from it.
    ``finally_`` nodes run once every dependency is over, whatever the
    outcome; only they may be ``optional`` (their failure leaves ``ok`` alone).
    ``line`` is where the node was written (cell line), for messages.
    """

    name: str
    make_runner: Runner | RunnerFactory
    deps: tuple[str, ...] = ()
    finally_: bool = False
    optional: bool = False
    kind: str | None = None
    timeout: float | None = None
    retries: int = 0
    backoff: float = 1.0
    stall: float | None = None
    describe: str = ""
    line: int | None = None
    #: where the node's task runs ('thread', 'process', ...): a ``TaskSpec.backend``
    backend: str = "thread"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = where_of(self)
        check_name(self.name, "task", where)
        object.__setattr__(self, "deps", tuple(self.deps))
        if self.optional and not self.finally_:
            raise SpecError(
                f"{where}task {self.name} is optional but not finally: only a finally task may be "
                "optional (add finally, or drop optional)"
            )
        seen: set[str] = set()
        for d in self.deps:
            if d in seen:
                raise SpecError(f"{where}task {self.name} lists dependency {d} twice")
            seen.add(d)
        if isinstance(self.make_runner, Runner):
            if self.kind is None:
                object.__setattr__(self, "kind", self.make_runner.kind)
            if not self.describe:
                object.__setattr__(self, "describe", self.make_runner.describe())
        elif not callable(self.make_runner):
            raise SpecError(f"{where}task {self.name}: make_runner must be a Runner or a callable (upstream) -> Runner")
        elif self.kind is None:
            object.__setattr__(self, "kind", "python")

    def build(self, upstream: Upstream) -> Runner:
        """The runner for one release of this node."""
        if isinstance(self.make_runner, Runner):
            return self.make_runner
        runner = self.make_runner(upstream)
        if not isinstance(runner, Runner):
            raise SpecError(f"the runner factory of task {self.name} returned {type(runner).__name__}, not a Runner")
        return runner


class NodeLike(Protocol):
    """What ``check_graph`` needs of a node (a ``GraphNode`` or a parsed task line)."""

    name: str
    deps: tuple[str, ...]
    line: int | None


def where_of(node: Any) -> str:
    """'line N: ' for a node parsed from a cell, else ''."""
    line = getattr(node, "line", None)
    return f"line {line}: " if line is not None else ""


def suggest(name: str, known: Sequence[str]) -> str:
    """': did you mean 'x'?' for the closest known name, else the list of names (short)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f": did you mean {close[0]!r}?"
    listed = ", ".join(list(known)[:8]) + (", ..." if len(known) > 8 else "")
    return f" (tasks: {listed or 'none'})"


def check_graph(nodes: Sequence[NodeLike]) -> list[str]:
    """Check names, dependencies and cycles; return the names in an order that runs dependencies first.

    Raises ``SpecError``: a duplicate name, an unknown dependency (with the
    closest name), or a cycle written ``a -> b -> a`` (``->``: runs before).
    O(tasks + edges).
    """
    if not nodes:
        raise SpecError("the graph has no tasks")
    first: dict[str, NodeLike] = {}
    for n in nodes:
        if n.name in first:
            other = first[n.name].line
            at = f" (first on line {other})" if other is not None else ""
            raise SpecError(f"{where_of(n)}duplicate task name {n.name}{at}: task names must be unique")
        first[n.name] = n
    names = list(first)
    for n in nodes:
        for d in n.deps:
            if d not in first:
                raise SpecError(
                    f"{where_of(n)}task {n.name} runs after {d!r}, which is not a task of this graph"
                    + suggest(d, names)
                )
    sorter = graphlib.TopologicalSorter({n.name: n.deps for n in nodes})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as e:
        cycle = list(e.args[1])
        lines = sorted({first[c].line for c in cycle if first[c].line is not None})
        at = f" (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))})" if lines else ""
        raise SpecError(
            f"dependency cycle: {' -> '.join(cycle)}{at}: each task would wait for itself; "
            "remove one of these dependencies"
        ) from None


class NodeRunner(Runner):
    """The runner a graph task is submitted with: builds the real one at release, then delegates.

    A factory that raises fails the task (with that error) when it runs.
    """

    def __init__(self, node: GraphNode, *, has_dependents: bool = False) -> None:
        self.node = node
        self.kind = node.kind or "python"
        self.has_dependents = has_dependents
        self.after_tasks: tuple[int, ...] = ()
        self._inner: Runner | None = None
        self._error: BaseException | None = None

    @property
    def inner(self) -> Runner | None:
        """The runner built for the current release (None before the first)."""
        return self._inner

    def prepare(self, upstream: Upstream, after_tasks: tuple[int, ...] = ()) -> None:
        """Build the runner for this release (called by the scheduling step); ``after_tasks``: the dependencies' ids."""
        self.after_tasks = after_tasks
        try:
            self._inner, self._error = self.node.build(upstream), None
        except Exception as e:
            self._inner, self._error = None, e

    @property
    def needs_worker_slot(self) -> bool:  # type: ignore[override]
        """As the runner built for this release (a prompt's, a cluster's take none); True before it."""
        inner = self._inner
        return inner.needs_worker_slot if inner is not None else True

    def resolve(self) -> Runner:
        if self._error is not None:
            raise self._error
        if self._inner is None:
            raise SpecError(f"task {self.node.name} ran before its graph released it")
        return self._inner.resolve()

    def run(self, ctx: TaskContext) -> Any:
        return self.resolve().run(ctx)

    def dependency_value(self, value: Any) -> Any:
        return self._inner.dependency_value(value) if self._inner is not None else value

    def describe(self) -> str:
        if self.node.describe:
            return self.node.describe
        return self._inner.describe() if self._inner is not None else self.kind
