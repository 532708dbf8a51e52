"""The Python callable backend: any provider, through a function the user names.

``settings.callable = "package.module:function"`` names a function called as
``function(prompt, **options)`` (options: ``model``, ``system``,
``temperature``, ``max_tokens``, those that are set). It returns the text, an
iterator of text chunks, an async iterator of chunks, or an awaitable of either.

Where it runs: the call itself and a sync iterator run in the task's worker
thread (cancel is checked between chunks: a chunk the function is blocked on
finishes first, though the task shows as cancelled at once). An awaitable or
async iterator runs on the shared LLM loop, under the concurrency limit, and
cancel stops it at once; like any coroutine there it must not block (a
blocking call stalls every prompt: use the sync form for blocking clients).
"""
from __future__ import annotations

import importlib
import inspect
import traceback
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from ..errors import SpecError
from . import loop
from .chat import Emit, PromptRequest
from .errors import PromptFailed
from .settings import PromptSettings


class CallableError(Exception):
    """The redacted traceback of what the user's function raised (the cause of its ``PromptFailed``)."""


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``"module:function"`` (the function may be dotted: ``"mod:Class.method"``); ``SpecError`` if it fails."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # an import runs arbitrary code: report whatever it raised
        raise SpecError(f"cannot load the llm callable {spec!r}: {type(e).__name__}: {e}") from e
    if not callable(obj):
        raise SpecError(f"the llm callable {spec!r} is a {type(obj).__name__}, not a function")
    return obj


def callable_failure(e: BaseException, spec: str, partial: str, settings: PromptSettings) -> PromptFailed:
    """The ``PromptFailed`` for an exception of the function: secrets redacted, the traceback kept as its cause.

    Raise it outside the ``except`` block, so the original is not its context either.
    """
    after = f" after {len(partial)} characters" if partial else ""
    failure = PromptFailed(
        settings.redact(f"the llm callable {spec!r} failed{after}: {type(e).__name__}: {e}"), partial=partial
    )
    failure.__cause__ = CallableError(settings.redact("".join(traceback.format_exception(e)).rstrip()))
    return failure


def call_options(req: PromptRequest) -> dict[str, Any]:
    """The keyword options passed to the function: those that are set."""
    s = req.settings
    opts = {"model": req.model, "system": req.system, "temperature": s.temperature, "max_tokens": s.max_tokens}
    return {k: v for k, v in opts.items() if v is not None}


def is_async(value: Any) -> bool:
    """True if ``value`` must run on the loop (an awaitable or an async iterator)."""
    return inspect.isawaitable(value) or isinstance(value, AsyncIterable)


def chunk_text(chunk: Any, spec: str) -> str:
    """A chunk as text; ``TypeError`` naming the function for anything but ``str`` (None is skipped)."""
    if chunk is None:
        return ""
    if not isinstance(chunk, str):
        raise TypeError(f"the llm callable {spec!r} gave a {type(chunk).__name__}, not text")
    return chunk


def iter_sync(value: Any, spec: str) -> Iterable[str]:
    """The chunks of a sync result: the text itself, or each chunk of an iterator."""
    if isinstance(value, str):
        yield value
        return
    if not isinstance(value, Iterable):
        raise TypeError(f"the llm callable {spec!r} returned a {type(value).__name__}, not text or chunks of text")
    for chunk in value:
        yield chunk_text(chunk, spec)


async def stream_async(value: Any, spec: str, max_concurrency: int, emit: Emit, parts: list[str]) -> str:
    """On the loop: await / iterate ``value``, emitting each chunk; returns the whole text."""
    async with loop.current().limit(max_concurrency):
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, AsyncIterable):
            async for chunk in value:
                text = chunk_text(chunk, spec)
                if text:
                    parts.append(text)
                    emit(text)
        else:
            for text in iter_sync(value, spec):
                if text:
                    parts.append(text)
                    emit(text)
    return "".join(parts)
