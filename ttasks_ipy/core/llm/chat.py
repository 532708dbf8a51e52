"""The OpenAI-compatible chat-completions backend: one streamed request, on the shared loop.

``stream_chat(request, emit, meta)`` is a coroutine for the loop of
``loop.py``. It waits for a slot of the concurrency limit, POSTs
``{base_url}/chat/completions`` with ``"stream": true``, and calls
``emit(text)`` for each piece of content as its server-sent event arrives
(``data: {json}`` lines, ``data: [DONE]`` at the end; ``:`` comments, ``event:``
and ``id:`` fields are skipped). It returns the whole text and fills ``meta``.

Faults, translated here (the one boundary) into ``PromptFailed``:

* 429 and 5xx answers are retried, only ever before the first token (an error
  status comes before any content), waiting ``retry-after-ms`` /
  ``Retry-After`` when sent, else exponential backoff;
* 401/403 are not retried and name the key's variable, never its value;
* other statuses quote the server's message, redacted and then cut short (a
  cut first could leave a piece of a key that redaction no longer knows);
* connection refused, a timeout, a stream cut off, a line that is not JSON, or
  an ``error`` object inside the stream fail with the text so far in ``partial``.

httpx exceptions hold the request, and so its headers (the key): they are
never chained to what we raise, not even as ``__context__``; their type and
message are quoted instead. A server answering JSON instead of a stream is accepted.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..secrets import clip
from . import loop
from .errors import PromptFailed
from .settings import PromptSettings

Emit = Callable[[str], None]


@dataclass(frozen=True)
class PromptRequest:
    """One prompt, resolved: the text after expansion, the model and system prompt to use."""

    prompt: str
    model: str | None
    system: str | None
    settings: PromptSettings

    def messages(self) -> list[dict[str, str]]:
        """The chat messages: the system prompt if any, then the prompt."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return [*msgs, {"role": "user", "content": self.prompt}]

    def body(self) -> dict[str, Any]:
        """The JSON body of the chat-completions request."""
        s = self.settings
        body: dict[str, Any] = {"model": self.model, "messages": self.messages(), "stream": True}
        if s.include_usage:
            body["stream_options"] = {"include_usage": True}
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        return body


async def stream_chat(req: PromptRequest, emit: Emit, meta: dict[str, Any], started: float) -> str:
    """Send ``req``, streaming content to ``emit``; returns the whole text (see the module docstring).

    ``started`` is the ``time.monotonic()`` the latencies in ``meta`` count from.
    """
    lt = loop.current()
    s = req.settings
    async with lt.limit(s.max_concurrency):
        meta["wait_s"] = round(time.monotonic() - started, 4)
        client = lt.client()
        retries = 0
        parts: list[str] = []
        while True:
            wait = await _attempt(client, req, emit, parts, meta, started, retries)
            if wait is None:
                return "".join(parts)
            retries += 1
            meta["retries"] = retries
            await asyncio.sleep(wait)


async def _attempt(
    client: httpx.AsyncClient,
    req: PromptRequest,
    emit: Emit,
    parts: list[str],
    meta: dict[str, Any],
    started: float,
    retries: int,
) -> float | None:
    """One HTTP request, adding content to ``parts``.

    Returns None when the text is complete, or the seconds to wait before a
    retry (only for an error status, so ``parts`` is still empty then).
    """
    s = req.settings
    timeout = httpx.Timeout(s.timeout)
    failure: PromptFailed | None = None
    try:
        async with client.stream(
            "POST", s.chat_url, json=req.body(), headers=s.request_headers(), timeout=timeout
        ) as resp:
            if resp.status_code >= 300:
                detail = await _error_detail(resp, s)
                status = resp.status_code
                if (status == 429 or status >= 500) and retries < s.retries:
                    return _retry_wait(resp.headers, retries, s)
                raise PromptFailed(_status_message(status, detail, s, retries), status=status, retries=retries)
            ctype = resp.headers.get("content-type", "")
            if ctype.startswith("application/json"):
                await _read_json(resp, s, emit, parts, meta, started)
            else:
                await _read_events(resp, s, emit, parts, meta, started)
            return None
    except PromptFailed as e:
        e.partial, e.retries = "".join(parts), retries
        raise
    except httpx.HTTPError as e:
        failure = PromptFailed(_transport_message(e, s, parts), partial="".join(parts), retries=retries)
    # raised outside the handler: the httpx error (which holds the request headers) is not even its context
    raise failure


async def _read_events(
    resp: httpx.Response, s: PromptSettings, emit: Emit, parts: list[str], meta: dict[str, Any], started: float
) -> None:
    """Read server-sent events until ``[DONE]`` (or a ``finish_reason`` and the end of the body)."""
    data: list[str] = []
    finished = False

    def dispatch(payload: str) -> bool:
        nonlocal finished
        if payload.strip() == "[DONE]":
            return True
        try:
            obj = json.loads(payload)
        except ValueError:
            raise PromptFailed(
                f"malformed stream from {s.public_url} after {_chars(parts)}: "
                f"an event is not JSON: {_head(payload, s, 80)!r}"
            ) from None
        if not isinstance(obj, dict):
            raise PromptFailed(f"malformed stream from {s.public_url}: an event is {type(obj).__name__}, not an object")
        if obj.get("error"):
            raise PromptFailed(f"the server reported an error mid-stream after {_chars(parts)}: "
                               f"{_error_text(obj['error'], s)}")
        finished = _take_chunk(obj, emit, parts, meta, started) or finished
        return False

    async for line in resp.aiter_lines():
        if not line:
            if data:
                payload, data = "\n".join(data), []
                if dispatch(payload):
                    return
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data and dispatch("\n".join(data)):
        return
    if not finished:
        raise PromptFailed(f"the stream from {s.public_url} ended before its end ([DONE]) after {_chars(parts)}")


def _take_chunk(obj: dict[str, Any], emit: Emit, parts: list[str], meta: dict[str, Any], started: float) -> bool:
    """Take one ``chat.completion.chunk``; True if it carried a ``finish_reason``."""
    if obj.get("model"):
        meta["response_model"] = obj["model"]
    usage = obj.get("usage")
    if isinstance(usage, dict):
        meta["usage"] = usage
    finished = False
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or choice.get("message") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(text, str) and text:
            if not parts:
                meta["first_token_s"] = round(time.monotonic() - started, 4)
            parts.append(text)
            emit(text)
        if choice.get("finish_reason"):
            meta["finish_reason"] = choice["finish_reason"]
            finished = True
    return finished


async def _read_json(
    resp: httpx.Response, s: PromptSettings, emit: Emit, parts: list[str], meta: dict[str, Any], started: float
) -> None:
    """A whole ``chat.completion`` object (a server that does not stream)."""
    raw = await resp.aread()
    try:
        obj = json.loads(raw)
    except ValueError:
        head = _head(raw.decode("utf-8", "replace"), s, 80)
        raise PromptFailed(f"malformed answer from {s.public_url}: not JSON: {head!r}") from None
    if not isinstance(obj, dict) or obj.get("error"):
        err = obj.get("error") if isinstance(obj, dict) else obj
        raise PromptFailed(f"the server reported an error: {_error_text(err, s)}")
    _take_chunk(obj, emit, parts, meta, started)


async def _error_detail(resp: httpx.Response, s: PromptSettings) -> str:
    """The server's own words about an error status, short and redacted."""
    try:
        raw = await resp.aread()
    except httpx.HTTPError:
        return ""
    try:
        obj = json.loads(raw)
    except ValueError:
        return _head(raw.decode("utf-8", "replace").strip(), s, 200)
    return _error_text(obj.get("error", obj) if isinstance(obj, dict) else obj, s)


def _error_text(err: Any, s: PromptSettings) -> str:
    """The message of a server's ``error`` object, redacted, then cut to 300 characters."""
    if isinstance(err, dict):
        err = err.get("message") or err.get("error") or json.dumps(err)
    return _head(str(err), s, 300)


def _head(text: str, s: PromptSettings, limit: int) -> str:
    """The start of a server's ``text`` for a message: redacted first, then cut to ``limit`` characters.

    Only a bounded window is redacted (what lies past it is cut away in any case).
    """
    return clip(s.redact(text[: limit + 4096]), limit)


def _status_message(status: int, detail: str, s: PromptSettings, retries: int) -> str:
    tried = f" after {retries} retries" if retries else ""
    if status in (401, 403):
        unset = "" if s.api_key() else " (it is not set)"
        return f"authentication failed (HTTP {status}): check the key in ${s.api_key_env}{unset}"
    said = f": {detail}" if detail else ""
    if status == 429:
        return f"rate limited (HTTP 429) by {s.public_url}{tried}{said}"
    if status >= 500:
        return f"server error (HTTP {status}) from {s.public_url}{tried}{said}"
    return f"request refused (HTTP {status}) by {s.public_url}{said}"


def _transport_message(e: httpx.HTTPError, s: PromptSettings, parts: list[str]) -> str:
    what = s.redact(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    url = s.public_url
    if isinstance(e, httpx.ConnectTimeout):
        return f"connecting to {url} timed out after {s.timeout:g}s ({what})"
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect to {url}: is the server running? ({what})"
    if isinstance(e, httpx.TimeoutException):
        return f"no data from {url} for {s.timeout:g}s after {_chars(parts)} ({what})"
    if parts or isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
        return f"the stream from {url} was cut after {_chars(parts)} ({what})"
    return f"request to {url} failed ({what})"


def _retry_wait(headers: httpx.Headers, retries: int, s: PromptSettings) -> float:
    """Seconds to wait before retry number ``retries + 1``: the server's word, else backoff."""
    wait: float | None = None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            wait = float(ms) / 1000
        except ValueError:
            pass
    after = headers.get("retry-after")
    if wait is None and after:
        try:
            wait = float(after)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(after)
                wait = when.timestamp() - time.time()
            except (TypeError, ValueError):
                pass
    if wait is None:
        wait = s.backoff * (2 ** retries) * random.uniform(1.0, 1.25)
    return min(max(wait, 0.0), s.max_retry_wait)


def _chars(parts: list[str]) -> str:
    n = sum(map(len, parts))
    return "1 character" if n == 1 else f"{n} characters"
