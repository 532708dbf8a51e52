"""Task graphs: ``GraphNode`` describes a task and its dependencies, ``GraphRun`` runs them.

``nodes`` describes a graph and checks it (names, dependencies, cycles);
``upstream`` is what a task sees of its dependencies; ``run`` schedules a
started graph (its docstring explains the scheduler's state).
"""
from __future__ import annotations

from ..names import check_name
from .nodes import GraphNode, NodeLike, NodeRunner, RunnerFactory, check_graph, suggest
from .run import RESERVED_NAMES, GraphRun, GraphStats
from .upstream import Upstream, UpstreamResult

__all__ = [
    "GraphNode",
    "GraphRun",
    "GraphStats",
    "NodeLike",
    "NodeRunner",
    "RESERVED_NAMES",
    "RunnerFactory",
    "Upstream",
    "UpstreamResult",
    "check_graph",
    "check_name",
    "suggest",
]
