"""Text whose fields are filled in when a task starts: all the engine knows about expansion.

The engine never parses ``{expr}`` fields itself. Where text must be filled
in at run time (a graph's prompt task reads ``{upstream.X.value}`` when it
starts), the syntax layer parses it once and hands over a ``Template`` bound
to the values it reads; the runner calls ``render()`` in its attempt.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Template"]


@runtime_checkable
class Template(Protocol):
    """Text with fields, already parsed and bound to the namespace it reads."""

    @property
    def source(self) -> str:
        """The text as written (for descriptions and listings)."""
        ...

    def render(self) -> str:
        """The text with its fields filled in now; raises ``SpecError`` naming a field that fails."""
        ...
