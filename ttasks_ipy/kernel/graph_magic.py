"""``%%bgraph``: parse the cell, build the graph, start it, bind its handle. The magic's whole body.

``%%bgraph NAME [--timeout S] [--max-parallel N] [--replace]`` then one task
per line (see ``syntax.graph``). ``bgraph(session, line, cell, user_ns)``
validates everything first (a bad cell is one ``UsageError``: nothing starts,
nothing is bound), then starts the graph, binds ``NAME`` to its ``GraphRun``
and returns at once. Python tasks deliver the names they assign like ``%bg``.

The magic class registers it with ``magic_for(session)``; ``find_in_graphs``
resolves ``pipeline`` and ``pipeline.test`` for ``%bg --after/--cancel/--wait/--log``.
"""
from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import no_var_expand

from ..core.errors import QueueFull, SpecError, TaskError
from ..core.graph import GraphNode, GraphRun, check_name
from ..core.task import Task
from ..syntax import numbers
from ..syntax.comments import strip_comment
from ..syntax.graph import compile_graph
from .dispatch import Dispatch

USAGE = "%%bgraph NAME [--timeout S] [--max-parallel N] [--replace] [--dask | --local]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"%%bgraph: {numbers.argparse_message(message)} (usage: {USAGE})")


#: the options of the first line: (flag, argparse keywords); the help text is made from this list
GRAPH_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--timeout", {"type": numbers.arg_type(lambda s: numbers.seconds("--timeout", s)), "metavar": "S",
                   "help": "stop the graph after S seconds"}),
    ("--max-parallel", {"type": numbers.arg_type(lambda s: numbers.count("--max-parallel", s, low=1)),
                        "metavar": "N", "help": "run at most N tasks at once"}),
    ("--replace", {"action": "store_true", "help": "cancel a running graph of the same name"}),
    ("--dask", {"action": "store_true",
                "help": "run its Python and bash tasks on a Dask cluster (a line's local stays here)"}),
    ("--local", {"action": "store_true", "help": "run its tasks here, whatever TTasks.backend says"}),
]


def _parser() -> _Parser:
    p = _Parser(prog="%%bgraph", add_help=False, allow_abbrev=False)
    p.add_argument("name")
    for flag, kw in GRAPH_OPTIONS:
        p.add_argument(flag, **kw)
    return p


_PARSER = _parser()


def help_text() -> str:
    """What ``%%bgraph?`` shows: the first line, its options (from the parser) and the task lines."""
    options = [(f"{flag} {kw['metavar']}" if "metavar" in kw else flag, kw["help"]) for flag, kw in GRAPH_OPTIONS]
    width = max(len(left) for left, _ in options)
    return "\n".join([
        "Run a graph of tasks in the background; NAME is bound to its handle at once.",
        "",
        f"  {USAGE}",
        "  NAME [after DEP, DEP] [finally] [optional] [timeout=S] [retries=N] [stall=S] [process] [local] [model=M]: "
        "BODY",
        "  ...one task per line",
        "",
        "BODY is !COMMAND (bash), ?TEXT (an LLM prompt) or Python; deeper-indented lines continue it.",
        "A task runs when its dependencies succeeded; when one fails its dependents are blocked.",
        "finally tasks run once their dependencies are over, whatever happened.",
        "In Python bodies upstream.DEP.value (.output, .status, .error) reads a dependency's result;",
        "in one-line !/? bodies {upstream.DEP.output} is expanded when the task starts.",
        "",
        "Options of the first line (a trailing # starts a comment):",
        *(f"  {left.ljust(width)}  {right}" for left, right in options),
        "",
        "The handle: NAME.ok, NAME.status, NAME.DEP, NAME.wait(timeout), NAME.cancel(), NAME.rerun();",
        "%bg --wait/--cancel/--log NAME work too.",
    ]) + "\n"


def bgraph(session: Any, line: str, cell: str, user_ns: dict[str, Any],
           adjust: Callable[[list[GraphNode]], list[GraphNode]] | None = None) -> GraphRun:
    """Run the graph of a ``%%bgraph`` cell in the background; returns its handle (also bound as NAME).

    ``adjust(nodes)`` may replace nodes before it starts (a rerun keeps what succeeded).
    Raises ``UsageError`` (one line) for any bad input, before anything starts.
    """
    try:
        tokens = shlex.split(strip_comment(line))
    except ValueError as e:
        raise UsageError(f"%%bgraph: cannot read the first line: {e}") from None
    if not tokens:
        raise UsageError(f"%%bgraph: name the graph: {USAGE}")
    args = _PARSER.parse_args(tokens)
    name = args.name
    try:
        check_name(name, "graph")
        old = user_ns.get(name)
        if isinstance(old, GraphRun) and old.status == "running" and not args.replace:
            left = old.statistics().total - old.statistics().finished
            raise SpecError(
                f"graph {name} is still running ({left} task{'s' if left != 1 else ''} left): "
                f"cancel it ({name}.cancel()), "
                "wait for it, or run this cell with --replace"
            )
        nodes = compile_graph(
            name, cell, user_ns, first_line=2, grace=None,  # the session's grace when the task ends
            hooks=session, dask=_on_dask(session, args),
        )
        if any(n.backend == "dask" for n in nodes):
            session.dask.ensure("%%bgraph")
        if adjust is not None:
            nodes = adjust(nodes)
        graph = GraphRun(session.executor, name, nodes, timeout=args.timeout, max_parallel=args.max_parallel,
                         on_submit=lambda node, task: session.adopt(task, _dispatch(name, node, user_ns)))
        if isinstance(old, GraphRun) and old.status == "running":
            old.cancel()
        graph.start()
    except QueueFull as e:
        raise UsageError(f"%%bgraph: {e}") from None
    except TaskError as e:
        raise UsageError(f"%%bgraph {name}: {e}") from None
    user_ns[name] = graph
    record = getattr(getattr(session, "ledger", None), "record_graph", None)
    if record is not None:
        record(name, line, cell)  # kept for %bg --rerun in a later kernel
    session.track_graph(graph)
    session.display_graph(graph, start_line(graph))
    return graph


def _on_dask(session: Any, args: argparse.Namespace) -> bool:
    """Whether the graph's Python and bash tasks go to the Dask cluster (else they run here)."""
    dask_link = getattr(session, "dask", None)
    if dask_link is None:
        if args.dask:
            raise UsageError("%%bgraph: --dask needs a session with Dask set up")
        return False
    return bool(dask_link.choose("%%bgraph", "python", dask=args.dask, local=args.local) == "dask")


def _dispatch(graph: str, node: GraphNode, user_ns: dict[str, Any]) -> Dispatch:
    """What the session keeps about a graph task: a Python body delivers the names it assigns."""
    d = Dispatch(graph=graph, node=node.name, keeps_failed_result=node.kind != "python")
    if node.kind == "python":
        d.expression = bool(node.meta.get("expression"))
        d.remember_targets([] if d.expression else list(node.meta.get("assigns", ())), user_ns)
    return d


def start_line(graph: GraphRun) -> str:
    """What ``%%bgraph`` shows when it starts a graph (stable text for saved notebooks)."""
    names = [n.name for n in graph.nodes]
    shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
    extra = ""
    if graph.timeout is not None:
        extra += f", timeout {graph.timeout:g}s"
    if graph.max_parallel is not None:
        extra += f", at most {graph.max_parallel} at once"
    return f"[bg] graph {graph.name} started: {len(names)} task{'s' if len(names) != 1 else ''} ({shown}){extra}"


def magic_for(session: Any) -> Callable[[str, str], None]:
    """The ``%%bgraph`` cell magic for ``session``: ``shell.register_magic_function(magic_for(s), "cell", "bgraph")``.

    The cell's value is None: the handle is bound under the graph's name.
    """

    @no_var_expand
    def bgraph_magic(line: str, cell: str) -> None:
        bgraph(session, line, cell, session.shell.user_ns)

    bgraph_magic.__name__ = "bgraph"
    bgraph_magic.__doc__ = help_text()
    return bgraph_magic


def find_in_graphs(user_ns: Mapping[str, Any], key: str) -> GraphRun | Task | None:
    """``pipeline`` (a graph handle in ``user_ns``) or ``pipeline.test`` (one of its tasks), else None."""
    graph_name, dot, task_name = key.partition(".")
    graph = user_ns.get(graph_name)
    if not isinstance(graph, GraphRun):
        return None
    if not dot:
        return graph
    if task_name in graph and graph.tasks:
        return graph[task_name]
    return None


__all__ = ["USAGE", "bgraph", "help_text", "find_in_graphs", "magic_for", "start_line"]
