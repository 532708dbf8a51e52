"""``KeptResult``: a graph task that succeeded in an earlier kernel, given again from the ledger without running.

``%bg --rerun GRAPH`` after a restart rebuilds the graph from its kept cell;
each task that succeeded last time and whose result the ledger kept becomes a
``KeptResult`` (what succeeded stays), the others run again.
"""
from __future__ import annotations

from typing import Any

from ..context import TaskContext
from ..spec import Runner


class KeptResult(Runner):
    """Returns a value kept in the ledger at once (no worker slot, nothing runs)."""

    needs_worker_slot = False

    def __init__(self, kind: str, description: str, value: Any, *, statement: bool = False) -> None:
        """``value`` as the task returned it (a statement's: the dict of the names it assigned)."""
        self.kind = kind
        self.description = description
        self.value = value
        self.statement = statement

    def describe(self) -> str:
        return f"{self.description} (kept)"

    def dependency_value(self, value: Any) -> Any:
        """As a statement's: the one name it assigned gives that name's value."""
        if self.statement and isinstance(value, dict) and len(value) == 1:
            return next(iter(value.values()))
        return value

    def run(self, ctx: TaskContext) -> Any:
        if self.kind == "bash":  # a command's kept output is its task's output again (upstream.X.output)
            for stream, text in (("stdout", self.value.output), ("stderr", self.value.stderr)):
                if text:
                    ctx.output(stream, text)
        return self.value


__all__ = ["KeptResult"]
