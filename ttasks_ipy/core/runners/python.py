"""Python bodies: parse once at dispatch, find the names read and assigned, run in a worker thread.

A body is an expression or statements, top-level ``await`` allowed. The names
it reads are bound at dispatch (a snapshot of their values); anything else is
looked up in the user namespace at run time through ``FallbackGlobals``, so
functions and comprehensions defined in the body see the body's own names.
Names the body assigns at top level stay in the task until delivery.
"""
from __future__ import annotations

import ast
import asyncio
import builtins
import ctypes
import inspect
import linecache
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any

from .. import capture
from ..context import TaskContext
from ..errors import SpecError, TaskCancelled
from ..spec import Runner

_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


@dataclass
class PyBody:
    """A compiled body and what it reads and assigns."""

    source: str
    filename: str
    code: Any
    is_expression: bool
    reads: frozenset[str]
    assigns: tuple[str, ...]
    is_async: bool = field(default=False)
    #: the line of the cell where the body starts
    first_line: int = 1


def compile_body(source: str, filename: str, *, first_line: int = 1) -> PyBody:
    """Parse and compile ``source``; raises ``SpecError`` naming the line for a syntax error."""
    if not source.strip():
        raise SpecError("the Python body is empty")
    try:
        tree = ast.parse(source, filename, mode="exec")
    except SyntaxError as e:
        line = (e.lineno or 1) + first_line - 1
        raise SpecError(f"syntax error in the body, line {line}: {e.msg}") from None
    is_expr = len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
    if first_line > 1:
        ast.increment_lineno(tree, first_line - 1)
    if is_expr:
        node: ast.AST = ast.Expression(tree.body[0].value)  # type: ignore[attr-defined]
        mode = "eval"
    else:
        node, mode = tree, "exec"
    try:
        code = compile(node, filename, mode, flags=_FLAGS, dont_inherit=True)
    except SyntaxError as e:
        raise SpecError(f"syntax error in the body, line {e.lineno}: {e.msg}") from None
    lines = source.splitlines(True)
    if first_line > 1:
        lines = ["\n"] * (first_line - 1) + lines
    linecache.cache[filename] = (len(source), None, lines, filename)
    return PyBody(
        source=source,
        filename=filename,
        code=code,
        is_expression=is_expr,
        reads=frozenset(_names_read(tree)),
        assigns=tuple(_names_assigned(tree)),
        is_async=bool(code.co_flags & inspect.CO_COROUTINE),
        first_line=first_line,
    )


def _names_read(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _names_assigned(tree: ast.Module) -> list[str]:
    """Names bound at the top level of the body (not inside functions, classes or comprehensions)."""
    found: dict[str, None] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = None
            return
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found[node.id] = None
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name != "*":
                    found[(a.asname or a.name).split(".")[0]] = None
        elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            found[node.target.id] = None
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in tree.body:
        visit(stmt)
    return list(found)


def _no_input(prompt: object = "") -> str:
    raise RuntimeError(
        "input() cannot be answered in a background task (nobody is there to type): "
        "read the value before dispatching and pass it in as a variable"
    )


#: the builtins a task body sees: ``input`` fails at once instead of waiting forever
TASK_BUILTINS = {**vars(builtins), "input": _no_input}


class FallbackGlobals(dict):
    """A globals dict that falls back to the user namespace for names it does not hold."""

    def __init__(self, own: Mapping[str, Any], fallback: Mapping[str, Any]) -> None:
        super().__init__(own)
        self.fallback = fallback

    def __missing__(self, key: str) -> Any:
        return self.fallback[key]


def bind(body: PyBody, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the names ``body`` reads, taken from ``namespace`` now."""
    return {n: namespace[n] for n in body.reads if n in namespace}


class PythonRunner(Runner):
    """Runs a ``PyBody`` in the worker thread against a snapshot plus the user namespace.

    The value is the expression's value, or for statements a dict of the names
    assigned. Cancel is cooperative (``current_task()``) and, for code running
    pure Python, also raises ``TaskCancelled`` inside the thread; a blocking C
    call (``time.sleep``) finishes first. The task is shown cancelled at once.
    """

    kind = "python"

    def __init__(self, body: PyBody, bound: Mapping[str, Any], fallback: Mapping[str, Any]) -> None:
        self.body = body
        self.bound = dict(bound)
        self.fallback = fallback
        #: the names assigned by the last run, with their values
        self.assigned: dict[str, Any] = {}

    def describe(self) -> str:
        return self.body.source.strip().splitlines()[0] if self.body.source.strip() else ""

    def dependency_value(self, value: Any) -> Any:
        """A statement that assigns one name gives that name's value; other statements the dict of names."""
        return single_assigned(value, self.body.is_expression, self.body.assigns)

    def run(self, ctx: TaskContext) -> Any:
        g = FallbackGlobals(self.bound, self.fallback)
        g.setdefault("__builtins__", TASK_BUILTINS)
        g.setdefault("__name__", "__main__")
        body = self.body
        value = _run_interruptibly(ctx, eval, (body.code, g), None, body.is_async)
        self.assigned = {n: dict.__getitem__(g, n) for n in body.assigns if dict.__contains__(g, n)}
        return value if body.is_expression else dict(self.assigned)


def single_assigned(value: Any, is_expression: bool, assigns: Sequence[str]) -> Any:
    """The value of the one name a statement assigned (its dict of names otherwise; an expression's value as is)."""
    if not is_expression and len(assigns) == 1 and isinstance(value, dict) and set(value) == set(assigns):
        return value[assigns[0]]
    return value


def _run_interruptibly(
    ctx: TaskContext, fn: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, is_async: bool | None,
) -> Any:
    """Run ``fn(*args, **kwargs)`` with its output routed to the task and a cancel raising in this thread.

    ``is_async``: the value is a coroutine to run on a loop of its own (None: if it is one).
    """
    capture.install()
    guard = Interruptible(ctx)
    try:
        with capture.route(ctx), guard:
            value = fn(*args, **kwargs) if kwargs else fn(*args)
            if is_async or (is_async is None and isinstance(value, CoroutineType)):
                value = _run_coroutine(value, ctx, guard)
        return value
    except AsyncCancel:
        raise TaskCancelled(f"task {ctx.label} was cancelled") from None
    finally:
        capture.uninstall()


def _run_coroutine(coro: Any, ctx: TaskContext, guard: Interruptible) -> Any:
    guard.enter_loop(None)  # from now on cancel goes through the loop
    loop = asyncio.new_event_loop()
    try:
        main = loop.create_task(coro)
        guard.enter_loop((loop, main))
        if ctx.cancelled:
            main.cancel()
        try:
            return loop.run_until_complete(main)
        except asyncio.CancelledError:
            raise TaskCancelled(f"task {ctx.label} was cancelled") from None
    finally:
        loop.close()


class AsyncCancel(BaseException):
    """Raised inside a cancelled thread task; a BaseException so that ``except Exception`` in user code
    does not swallow it (like KeyboardInterrupt). Turned into ``TaskCancelled`` at the body's edge."""


class Interruptible:
    """While the body runs, a cancel raises ``AsyncCancel`` in this thread (an async exception).

    Registered on the context with ``on_cancel``; a body that runs a coroutine
    is cancelled through its loop instead.
    """

    __slots__ = ("ctx", "tid", "lock", "inside", "sent", "async_mode", "loop", "_unregister")

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.tid = threading.get_ident()
        self.lock = threading.Lock()
        self.inside = False
        self.sent = False
        self.async_mode = False
        self.loop: Any = None
        self._unregister: Any = None

    def __enter__(self) -> Interruptible:
        self.ctx.check()
        self.inside = True  # (no lock: ``interrupt`` can run only from the registration below on)
        self._unregister = self.ctx.on_cancel(self.interrupt)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._unregister()
        self._unregister = None  # (it holds this guard's own method: no cycle left for the collector)
        with self.lock:
            self.inside = False
            sent = self.sent
        if sent:
            # an async exception that was set but has not fired yet fires here, at the first
            # backward jump, and is caught: it never reaches the pooled thread's own code.
            # (Clearing it with SetAsyncExc(tid, NULL) instead leaves the interpreter's
            # "pending" flag set, which hangs tracers and profilers.)
            try:
                for _ in range(3):
                    pass
            except AsyncCancel:
                pass
        if exc_type is AsyncCancel:
            raise TaskCancelled(f"task {self.ctx.label} was cancelled") from None
        return False

    def enter_loop(self, loop: Any) -> None:
        """The body now runs a coroutine on ``loop`` (``(loop, main_task)``; None while it is set up)."""
        with self.lock:
            self.async_mode = True
            self.loop = loop

    def interrupt(self) -> None:
        """The abort registered with ``on_cancel``: called from the cancelling thread."""
        with self.lock:
            if self.async_mode:
                if self.loop is None:  # the loop is being set up; it checks ctx.cancelled once ready
                    return
                lp, main = self.loop
                try:
                    lp.call_soon_threadsafe(main.cancel)
                except RuntimeError:  # the loop already closed
                    pass
                return
            if self.inside and not self.sent:
                self.sent = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.tid), ctypes.py_object(AsyncCancel)
                )


class CallRunner(Runner):
    """Calls ``fn(*args, **kwargs)`` in the worker thread (the function form, ``bg(fn, ...)``)."""

    kind = "python"

    def __init__(self, fn: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None) -> None:
        if not callable(fn):
            raise SpecError(f"bg() needs a callable, not {type(fn).__name__}")
        self.fn = fn
        self.args = args
        self.kwargs = dict(kwargs or {})

    def describe(self) -> str:
        return f"{getattr(self.fn, '__qualname__', repr(self.fn))}(...)"

    def run(self, ctx: TaskContext) -> Any:
        return _run_interruptibly(ctx, self.fn, self.args, self.kwargs, None)
