"""Where a body and its options become a runner: the one builder behind ``%bg``, ``%%bg`` and ``%%bgraph``.

A body is of one of three kinds, and runs in one of four places:

==========  ====================================================================
kind        the body
==========  ====================================================================
``bash``    a command (already expanded), run by bash in a new session
``python``  a compiled ``PyBody``; the names it reads are bound from a namespace
``prompt``  the text of an LLM prompt (a ``str``, or a template the attempt fills in)
==========  ====================================================================

==============  ================================================================
place           where the runner's attempts run
==============  ================================================================
``thread``      a thread of the kernel (Python against an overlay of the namespace)
``process``     one of the session's worker processes (Python; inputs pickled now)
``dask``        a Dask cluster (Python with pickled inputs, or a command); such a
                runner takes no local worker slot (the cluster queues it)
``detached``    a command that outlives the kernel (the ledger's runner)
==============  ================================================================

``make_runner(kind, body, place, ...)`` returns the runner. What needs the
kernel's live objects (the LLM settings, the worker pool, the ledger's runner
of detached commands) comes in through ``RunnerHooks``, which the session
implements once. Choosing the place from the user's options and settings, and
connecting to a cluster, belong to the magics; this module only builds.
``command_env`` and ``command_cwd`` turn ``--env`` and ``--cwd`` into the
values a command's runner takes.

Every refusal is a one-line ``SpecError`` (a magic adds its own prefix).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from ..core.errors import SpecError
from ..core.fields import Template as FilledText
from ..core.runners.bash import BashRunner
from ..core.runners.python import PyBody, PythonRunner, bind
from ..core.spec import Runner
from .expand import expand_text

if TYPE_CHECKING:
    from ..core.runners.prompt import PromptSettings

#: what a body is: a command, Python, or an LLM prompt
BodyKind = Literal["bash", "python", "prompt"]
#: where a runner's attempts run
Place = Literal["thread", "process", "dask", "detached"]
#: the places each kind of body can run in
PLACES: Mapping[str, tuple[str, ...]] = {
    "bash": ("thread", "dask", "detached"),
    "python": ("thread", "process", "dask"),
    "prompt": ("thread",),
}

R = TypeVar("R", bound=Runner)


@runtime_checkable
class RunnerHooks(Protocol):
    """What building a runner needs from the kernel's live objects; a session implements it once."""

    def prompt_settings(self) -> PromptSettings:
        """The LLM settings a prompt runs with, as they are now."""
        ...

    def worker_pool(self) -> object:
        """The worker processes of the ``process`` place, started if they are not yet."""
        ...

    def detached_runner(self, command: str, env: dict[str, str], cwd: str | None) -> Runner:
        """The runner of a command that outlives the kernel (recorded so that a later kernel finds it)."""
        ...


def make_runner(
    kind: BodyKind,
    body: str | PyBody | FilledText,
    place: Place = "thread",
    *,
    hooks: RunnerHooks | None = None,
    namespace: Mapping[str, Any] | None = None,
    bound: Mapping[str, Any] | None = None,
    first_line: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    grace: float | None = None,
    model: str | None = None,
    system: str | None = None,
) -> Runner:
    """The runner of ``body`` (of ``kind``) at ``place``.

    ``bash``: ``body`` is the command; ``env``, ``cwd`` and ``grace`` (seconds
    between SIGTERM and SIGKILL; None: the executor's) go to its runner.
    ``python``: ``body`` is a ``PyBody``; ``bound`` holds the values it reads
    (default: bound from ``namespace`` now), ``namespace`` is what a thread's
    body falls back to, ``first_line`` the cell line its tracebacks count from
    in another process. ``prompt``: ``body`` is the text; ``model`` and
    ``system`` override the settings. ``hooks`` is needed for prompts, the
    ``process`` place and the ``detached`` place.

    Raises ``SpecError`` (one line) for a kind that cannot run at ``place``, a
    value that cannot be sent to another process, or a prompt without an LLM
    backend.
    """
    if place not in PLACES.get(kind, ()):
        where = ", ".join(PLACES.get(kind, ())) or "nowhere"
        raise SpecError(f"a {kind} body does not run at {place!r} (it runs at: {where})")
    if kind == "bash":
        if not isinstance(body, str):
            raise SpecError(f"a command is text, not {type(body).__name__}")
        if place == "detached":
            return _need(hooks, "a detached command").detached_runner(body, dict(env or {}), cwd)
        runner: Runner = BashRunner(body, env=env, cwd=cwd, grace=grace)
    elif kind == "python":
        if not isinstance(body, PyBody):
            raise SpecError(f"a Python body is compiled first (compile_body), not {type(body).__name__}")
        ns: Mapping[str, Any] = namespace if namespace is not None else {}
        values = bound if bound is not None else bind(body, ns)
        if place == "thread":
            return PythonRunner(body, values, ns)
        from ..core.runners.portable import PortablePython

        if place == "process":
            _need(hooks, "a Python body in a worker process").worker_pool()
        runner = PortablePython(body, values, first_line=first_line)
    else:
        if isinstance(body, PyBody):
            raise SpecError("a prompt is text, not a compiled Python body")
        from ..core.runners.prompt import PromptRunner

        settings = _need(hooks, "a prompt").prompt_settings()
        return PromptRunner(body, settings, model=model, system=system)
    return elsewhere(runner) if place == "dask" else runner


def elsewhere(runner: R) -> R:
    """Mark ``runner`` as one that waits on a cluster here: it takes no local worker slot (the cluster queues it)."""
    runner.needs_worker_slot = False
    return runner


def command_env(items: Sequence[str], namespace: dict[str, Any]) -> dict[str, str]:
    """The environment of ``--env NAME=expr`` items: each expression evaluated in ``namespace``, as text."""
    env = {}
    for item in items:
        key, eq, expr = item.partition("=")
        if not eq or not key.isidentifier():
            raise SpecError(f"--env {item!r}: write NAME=expression")
        try:
            env[key] = str(eval(expr, namespace))  # noqa: S307 - the user's own expression
        except Exception as e:
            raise SpecError(f"--env {key}={expr}: {type(e).__name__}: {e}") from None
    return env


def command_cwd(text: str | None, namespace: Mapping[str, Any]) -> str | None:
    """The working directory of ``--cwd DIR`` (fields expanded, ``~`` too); None when not given."""
    if not text:
        return None
    cwd = os.path.expanduser(expand_text(text, namespace))
    if not os.path.isdir(cwd):
        raise SpecError(f"--cwd {cwd!r} is not a directory")
    return cwd


def _need(hooks: RunnerHooks | None, what: str) -> RunnerHooks:
    if hooks is None:
        raise SpecError(f"{what} needs the kernel's session (its settings and workers), which is not set up here")
    return hooks


__all__ = ["PLACES", "BodyKind", "Place", "RunnerHooks", "command_cwd", "command_env", "elsewhere", "make_runner"]
