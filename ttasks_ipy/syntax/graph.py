"""The body of a ``%%bgraph`` cell: task lines in, ``GraphNode``s out.

Grammar, one task per line::

    NAME [after DEP, DEP] [finally] [optional] [timeout=S] [retries=N] [stall=S] [process] [local] [model=M]: BODY

BODY starts after the colon: ``!`` bash, ``?`` an LLM prompt, anything else
Python. Lines indented deeper than the task lines continue the body above
them (their common indentation removed); inside a body every line belongs to
it, ``#`` lines included. At task-line indentation, ``#`` lines and blank
lines are ignored. To write a Python block, start the body on the next line.

``parse_graph`` reads the text (pure: no namespace), ``build_nodes`` turns the
lines into ``GraphNode``s whose runners are built (by ``runners.make_runner``)
when each task is released, and ``compile_graph`` does both. Every bad input
raises a one-line ``SpecError`` that names the cell line; nothing runs.

Values reach bodies at run time: Python bodies see ``upstream`` (their direct
dependencies' results) besides the names they read, which are bound at
dispatch like ``%bg``. One-line bash bodies and prompt bodies are parsed once
by the one expander (``expand``): at dispatch every ``upstream.X`` a field
reads must name a dependency; a bash body is expanded when the task is
released, quoted for where each value stands as in ``%bg``; a prompt body is
handed to its runner as a template that the attempt fills in (no quoting).
Fields that are not Python or read no defined name stay as written, as in
``%bg``. Multi-line bash bodies are passed as written.
"""
from __future__ import annotations

import ast
import difflib
import re
import textwrap
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import SpecError
from ..core.fields import Template as FilledText
from ..core.graph import RESERVED_NAMES, GraphNode, Upstream, check_graph
from ..core.names import check_name
from ..core.runners.python import PyBody, bind, compile_body
from ..core.spec import Runner
from . import numbers
from .expand import bind_prompt, expand_shell
from .runners import Place, RunnerHooks, make_runner
from .template import Template

_NAME = re.compile(r"[A-Za-z_]\w*")
_NUMBER_VALUE = re.compile(r"[^\s:,]*")
#: a model name may hold ':' (llama3:8b); it ends at whitespace, a comma, or a ':' that ends the header
_MODEL_VALUE = re.compile(r"[^\s,]*?(?=:\s|:$|[\s,]|$)")
_FLAGS = ("finally", "optional", "process", "local")
_KEYS = ("timeout", "retries", "stall", "model")
_WORDS = ("after", *_FLAGS, *_KEYS)
_GRAMMAR = ("NAME [after DEP, ...] [finally] [optional] [timeout=S] [retries=N] [stall=S] [process] [local] "
            "[model=M]: BODY")
#: Mapping methods of ``Upstream``: ``upstream.get`` is the method, not a task
_UPSTREAM_METHODS = frozenset({"get", "items", "keys", "values"})

#: ``(text, model) -> Runner``: builds a prompt runner; ``text`` is filled in by the runner's attempt (``render()``)
PromptFactory = Callable[[FilledText, "str | None"], Runner]
#: ``(body, bound, first_line) -> Runner``: a Python body in a worker process (``bound`` holds ``upstream``)
ProcessFactory = Callable[[PyBody, Mapping[str, Any], int], Runner]


@dataclass(frozen=True)
class TaskLine:
    """One task as written in the cell (before anything is compiled)."""

    name: str
    kind: str  # 'bash' | 'python' | 'prompt'
    body: str  # without the ! or ? marker, common indentation removed
    line: int  # cell line of the task line
    body_line: int  # cell line of the body's first line
    deps: tuple[str, ...] = ()
    finally_: bool = False
    optional: bool = False
    timeout: float | None = None
    retries: int = 0
    stall: float | None = None
    process: bool = False
    model: str | None = None
    #: run here even when the graph's tasks go to a cluster
    local: bool = False

    @property
    def multiline(self) -> bool:
        """True when the body has more than one line."""
        return "\n" in self.body.strip("\n")

    @property
    def source(self) -> str:
        """The body with its marker, as shown in lists."""
        return {"bash": "!", "prompt": "?"}.get(self.kind, "") + self.body


@dataclass
class _Pending:
    """A task line whose body lines are still being read."""

    name: str
    line: int
    inline: str
    opts: dict[str, Any]
    cont: list[tuple[int, str]] = field(default_factory=list)


def _fail(line: int, message: str) -> SpecError:
    return SpecError(f"line {line}: {message}")


def _indent(raw: str) -> int:
    """Width of the leading whitespace (tabs to multiples of 8)."""
    lead = raw[: len(raw) - len(raw.lstrip(" \t"))]
    return len(lead.expandtabs(8))


# ---- parsing ---------------------------------------------------------------
def parse_graph(cell: str, *, first_line: int = 2) -> list[TaskLine]:
    """Read the task lines of a ``%%bgraph`` cell body.

    ``first_line`` is the cell line of the body's first line (2: the line
    after ``%%bgraph``); messages and Python tracebacks use cell lines.
    Checks everything that needs no namespace: the grammar, option values,
    empty bodies, ``optional`` without ``finally``, duplicate names, unknown
    dependencies (with the closest name) and cycles. Raises ``SpecError``.
    """
    tasks: list[TaskLine] = []
    base: int | None = None
    cur: _Pending | None = None
    for idx, raw in enumerate(cell.splitlines()):
        ln = first_line + idx
        text = raw.strip()
        if not text:
            if cur is not None:
                cur.cont.append((ln, ""))
            continue
        width = _indent(raw)
        if base is None:
            if text.startswith("#"):
                continue
            base = width
        if width > base:
            if cur is None:
                raise _fail(ln, "indented line before the first task: indent only the lines that continue a body")
            cur.cont.append((ln, raw))
            continue
        if text.startswith("#"):
            if cur is not None:
                cur.cont.append((ln, ""))  # keeps the body's line numbers
            continue
        if width < base:
            raise _fail(ln, "less indented than the first task line: task lines start in one column")
        if cur is not None:
            tasks.append(_finish(cur))
        cur = _read_header(text, ln)
    if cur is not None:
        tasks.append(_finish(cur))
    if not tasks:
        raise SpecError("the graph has no tasks: write one task per line, " + _GRAMMAR)
    check_graph(tasks)
    for t in tasks:
        if t.name in RESERVED_NAMES:
            raise _fail(t.line, f"task name {t.name} is taken by the graph handle's own attribute: choose another")
    return tasks


def _read_header(text: str, ln: int) -> _Pending:
    """Read ``NAME [words]:`` and keep the rest of the line as the inline body."""
    m = _NAME.match(text)
    if not m:
        why = "a task line starts with the task's name" if text[:1] in "!?" else f"cannot read {text[:30]!r}"
        raise _fail(ln, f"{why}: a task line reads {_GRAMMAR}")
    name = m.group()
    check_name(name, "task", f"line {ln}: ")
    pos, n = m.end(), len(text)
    opts: dict[str, Any] = {}
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            raise _fail(ln, f"no ':' after the header of task {name}: a task line reads {_GRAMMAR}")
        if text[pos] == ":":
            return _Pending(name, ln, text[pos + 1:].strip(), opts)
        m = _NAME.match(text, pos)
        if not m:
            raise _fail(ln, f"unexpected {text[pos]!r} in the header of task {name}: a task line reads {_GRAMMAR}")
        word, pos = m.group(), m.end()
        if word in opts:
            raise _fail(ln, f"{word} is given twice for task {name}" + (
                ": list every dependency after one 'after', separated by commas" if word == "after" else ""))
        if word == "after":
            deps: list[str] = []
            while True:
                while pos < n and text[pos] in " \t":
                    pos += 1
                m = _NAME.match(text, pos)
                if not m:
                    raise _fail(ln, f"'after' needs task names separated by commas (task {name})")
                deps.append(m.group())
                pos = m.end()
                while pos < n and text[pos] in " \t":
                    pos += 1
                if pos < n and text[pos] == ",":
                    pos += 1
                    continue
                break
            opts["after"] = tuple(deps)
        elif word in _FLAGS:
            if pos < n and text[pos] == "=":
                raise _fail(ln, f"{word} takes no value (task {name})")
            opts[word] = True
        elif word in _KEYS:
            if pos >= n or text[pos] != "=":
                raise _fail(ln, f"{word} takes a value: write {word}={'M' if word == 'model' else 'N'} (task {name})")
            vm = (_MODEL_VALUE if word == "model" else _NUMBER_VALUE).match(text, pos + 1)
            assert vm is not None
            opts[word] = _value(word, vm.group(), ln, name)
            pos = vm.end()
        else:
            close = difflib.get_close_matches(word, _WORDS, n=1)
            hint = f": did you mean {close[0]!r}?" if close else f" (options: {', '.join(_WORDS)})"
            raise _fail(ln, f"unknown option word {word!r} in the header of task {name}{hint}")


def _value(key: str, raw: str, ln: int, name: str) -> Any:
    """Convert and check one ``key=value`` option."""
    if key == "model":
        if not raw:
            raise _fail(ln, f"model= needs a model name (task {name})")
        return raw
    try:
        if key == "retries":
            return numbers.count("retries", raw, high=1000)
        return numbers.seconds(key, raw)
    except SpecError as e:
        raise _fail(ln, f"{key}={raw}: {e} (task {name})") from None


def _finish(p: _Pending) -> TaskLine:
    """Assemble the body of ``p``, find its kind, check what depends on it."""
    cont = p.cont
    while cont and not cont[-1][1].strip():
        cont.pop()
    if p.inline:
        rest = textwrap.dedent("\n".join(raw for _, raw in cont)) if cont else ""
        body, body_line = p.inline + ("\n" + rest if cont else ""), p.line
    else:
        while cont and not cont[0][1].strip():
            cont.pop(0)
        body = textwrap.dedent("\n".join(raw for _, raw in cont))
        body_line = cont[0][0] if cont else p.line
    kind = "python"
    if body[:1] in ("!", "?"):
        kind = "bash" if body[0] == "!" else "prompt"
        body = body[1:]
        first, nl, rest = body.partition("\n")
        if nl and not first.strip():  # the marker alone, the body below it
            body, body_line = rest, body_line + 1
        else:
            body = first.strip() + nl + rest
    o = p.opts
    if not body.strip():
        what = {"bash": "empty command after '!'", "prompt": "empty prompt after '?'"}.get(kind, "empty body")
        raise _fail(p.line, f"task {p.name} has an {what}: write {p.name}: BODY (!bash, ?prompt, else Python)")
    if o.get("optional") and not o.get("finally"):
        raise _fail(p.line, f"task {p.name} is optional but not finally: only a finally task may be optional")
    if o.get("process") and kind != "python":
        raise _fail(p.line, f"process runs Python bodies in a worker process; task {p.name} is a {kind} task")
    if o.get("process") and o.get("local"):
        raise _fail(p.line, f"task {p.name} says both process and local: give one")
    if "model" in o and kind != "prompt":
        raise _fail(p.line, f"model= goes with a prompt body (?...); task {p.name} is a {kind} task")
    task = TaskLine(
        name=p.name, kind=kind, body=body, line=p.line, body_line=body_line, deps=o.get("after", ()),
        finally_=o.get("finally", False), optional=o.get("optional", False), timeout=o.get("timeout"),
        retries=o.get("retries", 0), stall=o.get("stall"), process=o.get("process", False), model=o.get("model"),
        local=o.get("local", False),
    )
    if kind == "prompt" or (kind == "bash" and not task.multiline):
        for f in Template(task.body, dollar=kind == "bash").fields():
            if f.tree is not None:
                _check_upstream(f.tree, task, body_line + f.line)
    return task


# ---- {expr} fields ---------------------------------------------------------
def _check_upstream(tree: ast.AST, task: TaskLine, line: int) -> None:
    """Each ``upstream.X`` / ``upstream["X"]`` must name a direct dependency of ``task``."""
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "upstream":
            key = node.attr
            if key in _UPSTREAM_METHODS:
                continue
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "upstream"
              and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            key = node.slice.value
        if key is None or key in task.deps:
            continue
        at = line + getattr(node, "lineno", 1) - 1
        deps = ", ".join(task.deps) or "nothing"
        close = difflib.get_close_matches(key, list(task.deps), n=1)
        hint = f": did you mean upstream.{close[0]}?" if close else f": add it with 'after {key}'"
        raise _fail(at, f"task {task.name} reads upstream.{key}, but it runs after {deps}{hint}")


# ---- building nodes ----------------------------------------------------------
def build_nodes(
    tasks: list[TaskLine],
    namespace: Mapping[str, Any],
    *,
    graph: str,
    grace: float | None = 2.0,
    hooks: RunnerHooks | None = None,
    dask: bool = False,
    make_prompt: PromptFactory | None = None,
    make_process: ProcessFactory | None = None,
) -> list[GraphNode]:
    """Compile each task's body and give it a runner factory.

    Runners are made by ``runners.make_runner``; ``hooks`` gives it the
    kernel's live objects (prompts, worker processes). ``make_prompt`` and
    ``make_process``, when given, make the runners of prompt tasks and of
    ``process`` tasks instead. With ``dask``, Python and bash tasks go to the
    Dask cluster unless their line says ``local`` or ``process`` (they take no
    local worker slot: the cluster queues them).

    Python bodies are compiled now (a syntax error names the cell line) and
    the names they read are bound from ``namespace`` now; ``upstream`` is
    added when the task is released. Without a way to make them (``hooks``
    or the factory) a ``?`` task or a ``process`` task is refused here; with
    one, each is made once now as a check (a ``SpecError`` it raises, such as
    no LLM backend or an input that cannot be pickled, is refused here too).
    Each node's ``meta`` says ``source``, ``line``, ``expression`` and
    ``assigns`` (Python).
    """
    if hooks is not None:
        make_prompt = make_prompt or _prompt_maker(hooks)
        make_process = make_process or _maker("process", hooks)
    nodes = []
    for t in tasks:
        meta: dict[str, Any] = {"source": t.source, "line": t.line}
        place: Place = "process" if t.process else "thread"
        if dask and not t.local and not t.process and t.kind in ("python", "bash"):
            place = "dask"
        if t.kind == "python":
            factory, body = _python(t, namespace, graph, place, make_process)
            meta.update(expression=body.is_expression, assigns=list(body.assigns))
        elif t.kind == "bash":
            factory = _bash(t, namespace, place, grace)
        else:
            if make_prompt is None:
                raise _fail(t.line, f"task {t.name}: prompt tasks (?) need an LLM backend, which is not set up here")
            factory = _prompt(t, namespace, make_prompt)
        first = t.source.strip().splitlines()[0]
        nodes.append(GraphNode(
            t.name, factory, deps=t.deps, finally_=t.finally_, optional=t.optional, kind=t.kind,
            timeout=t.timeout, retries=t.retries, stall=t.stall, line=t.line, meta=meta,
            backend=place, describe=first + (" …" if t.multiline else ""),
        ))
    return nodes


def compile_graph(
    name: str,
    cell: str,
    namespace: Mapping[str, Any],
    *,
    first_line: int = 2,
    grace: float | None = 2.0,
    hooks: RunnerHooks | None = None,
    dask: bool = False,
    make_prompt: PromptFactory | None = None,
    make_process: ProcessFactory | None = None,
) -> list[GraphNode]:
    """``parse_graph`` then ``build_nodes``: the nodes of graph ``name`` from its cell body."""
    check_name(name, "graph")
    return build_nodes(
        parse_graph(cell, first_line=first_line), namespace, graph=name, grace=grace, hooks=hooks, dask=dask,
        make_prompt=make_prompt, make_process=make_process,
    )


def _prompt_maker(hooks: RunnerHooks) -> PromptFactory:
    """Prompt runners made with the settings ``hooks`` give."""

    def make(text: FilledText, model: str | None) -> Runner:
        return make_runner("prompt", text, hooks=hooks, model=model)

    return make


def _maker(place: Place, hooks: RunnerHooks | None = None) -> ProcessFactory:
    """Runners of Python bodies at ``place`` (another process: ``process`` or ``dask``)."""

    def make(body: PyBody, bound: Mapping[str, Any], first_line: int) -> Runner:
        return make_runner("python", body, place, hooks=hooks, bound=bound, first_line=first_line)

    return make


def _python(
    t: TaskLine, namespace: Mapping[str, Any], graph: str, place: Place, make_process: ProcessFactory | None
) -> tuple[Callable[[Upstream], Runner], PyBody]:
    try:
        body = compile_body(t.body, f"<bgraph {graph}.{t.name}>", first_line=t.body_line)
    except SpecError as e:
        msg = str(e)
        m = re.match(r"syntax error in the body, line (\d+): (.*)", msg)
        if m:
            hint = ""
            if t.multiline and t.body_line == t.line:
                hint = " (a block starts on the line after the colon)"
            raise _fail(int(m.group(1)), f"syntax error in task {t.name}: {m.group(2)}{hint}") from None
        raise _fail(t.line, f"task {t.name}: {msg}") from None
    _check_upstream(ast.parse(t.body), t, t.body_line)
    bound = {k: v for k, v in bind(body, namespace).items() if k != "upstream"}
    if place == "thread":
        def in_thread(up: Upstream) -> Runner:
            return make_runner("python", body, namespace=namespace, bound={**bound, "upstream": up})

        return in_thread, body
    make = _maker("dask") if place == "dask" else make_process
    if make is None:
        raise _fail(t.line, f"task {t.name}: process needs worker processes, which are not set up here")
    try:  # now, so a value that cannot go to another process is refused at dispatch
        make(body, {**bound, "upstream": Upstream(t.name)}, t.body_line)
    except SpecError as e:
        raise _fail(t.line, f"task {t.name}: {e}") from None

    def away(up: Upstream) -> Runner:
        return make(body, {**bound, "upstream": up}, t.body_line)

    return away, body


def _bash(t: TaskLine, namespace: Mapping[str, Any], place: Place, grace: float | None) -> Callable[[Upstream], Runner]:
    if t.multiline:
        script = t.body
        return lambda up: make_runner("bash", script, place, grace=grace)
    template = Template(t.body.strip())

    def expanded(up: Upstream) -> Runner:
        command = expand_shell(template, ChainMap({"upstream": up.for_commands()}, namespace))  # type: ignore[arg-type]
        return make_runner("bash", command, place, grace=grace)

    return expanded


def _prompt(t: TaskLine, namespace: Mapping[str, Any], make_prompt: PromptFactory) -> Callable[[Upstream], Runner]:
    template, model = Template(t.body, dollar=False), t.model
    try:  # now, so a missing backend or model is refused at dispatch (the text is filled in at run time)
        make_prompt(bind_prompt(template, ChainMap({"upstream": Upstream(t.name)}, namespace)), model)  # type: ignore[arg-type]
    except SpecError as e:
        raise _fail(t.line, f"task {t.name}: {e}") from None

    def prompt(up: Upstream) -> Runner:
        return make_prompt(bind_prompt(template, ChainMap({"upstream": up}, namespace)), model)  # type: ignore[arg-type]

    return prompt


__all__ = ["PromptFactory", "ProcessFactory", "TaskLine", "build_nodes", "compile_graph", "parse_graph"]
