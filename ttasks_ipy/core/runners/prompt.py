"""Prompt tasks: an LLM request streamed into the task's output, token by token.

``PromptRunner`` is the task kind ``prompt``. Its attempt sends the request as
a coroutine to the one shared LLM event-loop thread (``llm/loop.py``), where
many prompts run at once under ``max_concurrency``; the worker thread only
waits, moving each token the loop hands over into ``ctx.output('stdout', ...)``
(so subscribers run on the worker, never on the shared loop; tokens that
arrive while they run go out together) and returns the whole text, a
``str``. Facts about the answer (model, latencies, token usage) are in
``runner.meta``.

Cancel (and so the executor's timeout) cancels the coroutine on the loop,
which closes the HTTP connection; the attempt then raises ``TaskCancelled``.

The text is a ``str``, or a ``fields.Template`` that the attempt renders
when it starts (graphs: ``{upstream.X.value}``); the engine does no
expansion of its own. The backends live in ``llm/``.
"""
from __future__ import annotations

import concurrent.futures
import inspect
import queue
import time
from collections.abc import Callable
from typing import Any

from ..context import TaskContext
from ..errors import SpecError, TaskCancelled
from ..fields import Template
from ..llm import loop
from ..llm.chat import Emit, PromptRequest, stream_chat
from ..llm.errors import PromptFailed
from ..llm.pycall import CallableError, call_options, callable_failure, is_async, iter_sync, load_callable, stream_async
from ..llm.settings import PromptSettings
from ..spec import Runner

__all__ = ["PromptFailed", "PromptRunner", "PromptSettings", "shutdown_loop"]

#: how often a waiting worker looks at its cancel flag even without news (a safety net)
_POLL = 0.5
_END = object()


class PromptRunner(Runner):
    """Sends ``text`` to the LLM of ``settings``; the task's value is the answer (a ``str``).

    ``model`` and ``system`` override the settings for this task. ``text`` is
    sent as given, or, when it is a ``Template``, rendered when the attempt
    starts (graphs). Raises ``SpecError`` at once, in one line naming the
    settings to set, when no backend or no model is configured.

    After (and during) a run, ``meta`` holds: ``backend``, ``model``, ``url`` or
    ``callable``, ``retries``, ``wait_s`` (queued behind the concurrency limit),
    ``first_token_s``, ``latency_s``, ``chars``, ``usage`` (the server's token
    counts, or None), ``finish_reason``, ``response_model``.
    """

    kind = "prompt"
    #: the attempt waits on the shared loop, not on the CPU: an executor may run it without a worker slot
    needs_worker_slot = False

    def __init__(
        self,
        text: str | Template,
        settings: PromptSettings | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> None:
        self.template: Template | None = None if isinstance(text, str) or not isinstance(text, Template) else text
        source = text if self.template is None else self.template.source
        if not isinstance(source, str) or not source.strip():
            raise SpecError("the prompt is empty: give the text to send")
        self.settings = settings if settings is not None else PromptSettings.from_env()
        self.text = source
        self.model = self.settings.resolve_model(model)
        self.system = system if system is not None else self.settings.system
        self._fn: Callable[..., Any] | None = None
        if self.settings.backend == "callable":
            assert self.settings.callable is not None
            self._fn = load_callable(self.settings.callable)
        self.meta: dict[str, Any] = {}

    # ---- describing ----------------------------------------------------
    def describe(self) -> str:
        line = self.text.strip().splitlines()[0]
        return "?" + (line if len(line) <= 60 else line[:57] + "...")

    def request_info(self) -> dict[str, Any]:
        """The request as it may be shown: URL, headers with secrets as ``***``, body (or the callable)."""
        req = PromptRequest(self.text, self.model, self.system, self.settings)
        if self._fn is not None:
            return {"callable": self.settings.callable, "prompt": self.text, "options": call_options(req)}
        url = self.settings.chat_url.replace(self.settings.base_url or "", self.settings.public_url, 1)
        return {"url": url, "headers": self.settings.shown_headers(), "body": req.body()}

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"PromptRunner(model={self.model!r}, text={text!r}, backend={self.settings.backend!r})"

    # ---- running -------------------------------------------------------
    def run(self, ctx: TaskContext) -> str:
        started = time.monotonic()
        s = self.settings
        meta: dict[str, Any] = {
            "backend": s.backend, "model": self.model, "retries": 0, "wait_s": 0.0, "first_token_s": None,
            "latency_s": None, "chars": 0, "usage": None, "finish_reason": None, "response_model": None,
        }
        if self._fn is not None:
            meta["callable"] = s.callable
        else:
            meta["url"] = s.public_url
        self.meta = meta
        prompt = self.text if self.template is None else self.template.render()
        req = PromptRequest(prompt, self.model, self.system, s)
        failure: PromptFailed
        try:
            if self._fn is not None:
                return self._run_callable(ctx, req, meta, started)
            return self._on_loop(ctx, lambda emit: stream_chat(req, emit, meta, started), meta, started)
        except (TaskCancelled, SpecError):
            raise
        except PromptFailed as e:
            failure = _redacted(e, s)
        except Exception as e:  # a fault of the backend itself: its text may quote a server, so redact it too
            failure = PromptFailed(s.redact(f"the prompt failed: {type(e).__name__}: {e}"))
        finally:
            meta["latency_s"] = round(time.monotonic() - started, 4)
        # the one boundary where a prompt's failure leaves for the task: raised outside the handler
        # (neither the original nor an httpx error, which holds the request headers, is its context)
        raise failure

    def _on_loop(
        self, ctx: TaskContext, make: Callable[[Emit], Any], meta: dict[str, Any], started: float
    ) -> str:
        """Run the coroutine ``make(emit)`` on the shared loop; move what it emits into the output."""
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        ctx.check()
        fut = loop.submit(make(inbox.put))
        # a cancel cancels the coroutine on the loop (closing its connection); the waiting thread wakes at once
        unregister = ctx.on_cancel(fut.cancel)
        fut.add_done_callback(lambda _f: inbox.put(_END))
        while True:
            try:
                item = inbox.get(timeout=_POLL)
            except queue.Empty:
                if ctx.cancelled:
                    fut.cancel()
                continue
            if item is _END:
                break
            texts, ended = [item], False
            while True:  # whatever piled up while the task's subscribers ran goes out as one piece
                try:
                    more = inbox.get_nowait()
                except queue.Empty:
                    break
                if more is _END:
                    ended = True
                    break
                texts.append(more)
            if not ctx.cancelled:
                self._emit(ctx, "".join(texts), meta, started)
            if ended:
                break
        unregister()
        try:
            return fut.result(timeout=0)
        except concurrent.futures.CancelledError:
            raise TaskCancelled(f"task {ctx.label} was cancelled") from None

    @staticmethod
    def _emit(ctx: TaskContext, text: str, meta: dict[str, Any], started: float) -> None:
        if meta["first_token_s"] is None:
            meta["first_token_s"] = round(time.monotonic() - started, 4)
        meta["chars"] += len(text)
        ctx.output("stdout", text)

    def _run_callable(self, ctx: TaskContext, req: PromptRequest, meta: dict[str, Any], started: float) -> str:
        assert self._fn is not None
        spec = str(self.settings.callable)
        parts: list[str] = []
        value: Any = None
        try:
            ctx.check()
            value = self._fn(req.prompt, **call_options(req))
            if is_async(value):
                mc = self.settings.max_concurrency
                return self._on_loop(ctx, lambda emit: stream_async(value, spec, mc, emit, parts), meta, started)
            for text in iter_sync(value, spec):
                ctx.check()
                if text:
                    parts.append(text)
                    self._emit(ctx, text, meta, started)
            ctx.check()
            return "".join(parts)
        except (TaskCancelled, PromptFailed):
            if inspect.iscoroutine(value) and inspect.getcoroutinestate(value) == inspect.CORO_CREATED:
                value.close()
            raise
        except Exception as e:
            if ctx.cancelled:
                raise TaskCancelled(f"task {ctx.label} was cancelled") from None
            failure = callable_failure(e, spec, "".join(parts), self.settings)
        finally:
            if inspect.isgenerator(value):
                value.close()
        # raised outside the handler: the user's exception (its text may hold a secret) is not its context
        raise failure


def _redacted(e: PromptFailed, settings: PromptSettings) -> PromptFailed:
    """``e`` with its message and its cause's text passed through ``settings.redact`` (``e`` itself if clean)."""
    message = str(e.args[0]) if e.args else ""
    cause = e.__cause__
    clean_message = settings.redact(message)
    clean_cause = None if cause is None else settings.redact(str(cause))
    if clean_message == message and (cause is None or clean_cause == str(cause)) and e.__context__ is None:
        return e
    clean = PromptFailed(clean_message, partial=e.partial, status=e.status, retries=e.retries)
    if clean_cause is not None:
        clean.__cause__ = CallableError(clean_cause)
    return clean


def shutdown_loop(timeout: float = 2.0) -> None:
    """Stop the shared LLM loop: cancel prompts in flight, close connections (for extension unload)."""
    loop.shutdown(timeout)
