"""A local OpenAI-compatible chat-completions server for tests.

It speaks the real protocol over real HTTP/1.1 on 127.0.0.1: ``POST
.../chat/completions`` (any prefix, so ``/v1/chat/completions`` and Azure's
``/openai/deployments/NAME/chat/completions?api-version=...`` both work) with a
JSON reply, or server-sent events in chunked transfer encoding when the body
asks for ``"stream": true``; ``GET .../models`` lists a model.

The reply is ``"Echo: "`` followed by the last user message, streamed one word
(with its leading space) per chunk. When the request asks for
``stream_options.include_usage``, a last chunk carries token counts (words).

The **model name chooses the behaviour**, written like a URL path with a
query and a fragment: ``BEHAVIOUR?key=value&...#tag``. The tag only makes the
name unique (counters are kept per full model name)::

    echo                       the default (any unknown name too): stream at once
    slow?delay=0.1             wait ``delay`` seconds before each chunk
    hang                       send the headers, then nothing until the client goes away
    429?n=2&after=0.2          the first ``n`` requests get 429 with ``Retry-After: after``
    429?n=1&ms=50              ... with ``retry-after-ms: 50`` instead
    500?n=1  (also 502, 503)   the first ``n`` requests get that status, then success
    401, 403                   always refused; the body echoes the key it received,
                               as some real providers do, so a client must not repeat it
    404                        always "model not found"
    malformed?after=2          two good chunks, then a ``data:`` line that is not JSON
    cut?after=2                two good chunks, then the connection is dropped mid-body
    nodone?after=2             two good chunks, then a clean end without ``[DONE]``
    errorchunk?after=1         one good chunk, then ``data: {"error": {...}}``
    nostream                   a JSON reply even when streaming was asked for
    reflect?form=F&at=N&status=S&pad=P
                               an error that repeats the request, as some proxies and
                               servers do: ``<credential header>: <value>; headers=<all
                               headers as JSON>; body=<body as JSON>``, preceded by
                               filler so the header's value (the key) starts at character
                               ``N`` of the reflected text (or ``P`` filler characters).
                               ``F`` picks where it lands: ``json`` (default, status ``S``,
                               default 400: ``{"error": {"message": text}}``), ``detail``
                               (``{"error": {"detail": text}}``), ``text`` (a plain-text
                               body), ``midstream`` (a good chunk, then an ``error`` event),
                               ``malformed`` (a ``data:`` line that is the text, not JSON),
                               ``badjson`` (a 200 JSON reply that is the text)

The server records every request (``requests``: path, query, lower-case
headers, JSON body) and every stream the client closed before the end
(``disconnects``, with ``wait_disconnect``). A stream notices the client going
away between chunks (the socket turns readable at EOF), so a cancelled request
is seen at once, not at the next write.

Use it from a fixture::

    with FakeLLM() as srv:
        srv.base_url        # 'http://127.0.0.1:PORT/v1'

or as a process (prints the port on the first line, then serves until killed)::

    python tests/llm_server.py --port 0

In that form ``GET /_fake/requests`` and ``GET /_fake/disconnects`` return what
was recorded, as JSON.
"""
from __future__ import annotations

import argparse
import json
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    time: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {"method": self.method, "path": self.path, "query": self.query, "headers": self.headers,
                "body": self.body}


class _ClientGone(Exception):
    """The client closed the connection while a reply was being streamed."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], owner: FakeLLM) -> None:
        super().__init__(addr, _Handler)
        self.owner = owner

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops an idle keep-alive connection is not an error worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeLLM:
    """The server: ``start()``/``stop()`` or a ``with`` block; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _Server((host, port), self)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self.requests: list[Recorded] = []
        self.disconnects: list[str] = []
        self._counts: dict[str, int] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeLLM:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what the tests read -------------------------------------------
    def requests_for(self, model: str) -> list[Recorded]:
        """The chat requests that named ``model``."""
        with self._cond:
            return [r for r in self.requests if isinstance(r.body, dict) and r.body.get("model") == model]

    def wait_disconnect(self, model: str, timeout: float) -> bool:
        """Block until the client closed a stream of ``model`` (True), or ``timeout`` ran out."""
        with self._cond:
            return self._cond.wait_for(lambda: model in self.disconnects, timeout)

    def wait_requests(self, model: str, n: int, timeout: float) -> bool:
        """Block until ``n`` requests for ``model`` arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests_for_locked(model)) >= n, timeout)

    def requests_for_locked(self, model: str) -> list[Recorded]:
        return [r for r in self.requests if isinstance(r.body, dict) and r.body.get("model") == model]

    # ---- bookkeeping from handler threads ------------------------------
    def _record(self, rec: Recorded) -> None:
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()

    def _count(self, model: str) -> int:
        """How many requests for ``model`` came before this one."""
        with self._cond:
            n = self._counts.get(model, 0)
            self._counts[model] = n + 1
            return n

    def _gone(self, model: str) -> None:
        with self._cond:
            self.disconnects.append(model)
            self._cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    # ---- routing -------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's protocol
        path = urllib.parse.urlsplit(self.path).path
        owner = self.server.owner
        if path == "/_fake/requests":
            with owner._cond:
                data = [r.as_dict() for r in owner.requests]
            self._json(200, data)
        elif path == "/_fake/disconnects":
            with owner._cond:
                self._json(200, list(owner.disconnects))
        elif path.endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "fake"}]})
        else:
            self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802 - http.server's protocol
        parts = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        owner = self.server.owner
        owner._record(Recorded(
            "POST", parts.path, dict(urllib.parse.parse_qsl(parts.query)),
            {k.lower(): v for k, v in self.headers.items()}, body,
        ))
        if not parts.path.endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {parts.path}", "type": "not_found"}})
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._json(400, {"error": {"message": "body must be JSON with messages", "type": "invalid_request_error"}})
            return
        try:
            self._chat(body)
        except _ClientGone:
            owner._gone(str(body.get("model")))
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            owner._gone(str(body.get("model")))
            self.close_connection = True

    # ---- the chat endpoint ---------------------------------------------
    def _chat(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or "echo")
        spec = urllib.parse.urlsplit(model)
        behaviour = spec.path
        opts = {k: v for k, v in urllib.parse.parse_qsl(spec.query)}
        seen = self.server.owner._count(model)

        if behaviour in ("429", "500", "502", "503"):
            if seen < int(opts.get("n", "1")):
                headers = {}
                if "after" in opts:
                    headers["Retry-After"] = opts["after"]
                if "ms" in opts:
                    headers["retry-after-ms"] = opts["ms"]
                kind = "rate_limit_exceeded" if behaviour == "429" else "server_error"
                self._json(int(behaviour), {"error": {"message": f"fake {behaviour}", "type": kind}}, headers)
                return
        elif behaviour in ("401", "403"):
            key = self.headers.get("authorization", "") or self.headers.get("api-key", "")
            key = key.removeprefix("Bearer ")
            self._json(int(behaviour), {"error": {
                "message": f"Incorrect API key provided: {key}. You can find your API key at the dashboard.",
                "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        elif behaviour == "reflect":
            self._reflect(body, opts)
            return
        elif behaviour == "404":
            self._json(404, {"error": {"message": f"The model `{model}` does not exist", "type": "not_found"}})
            return

        user = next((m.get("content", "") for m in reversed(body["messages"]) if m.get("role") == "user"), "")
        words = ("Echo: " + str(user)).split(" ")
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
        usage = {"prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in body["messages"]),
                  "completion_tokens": len(tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]

        if not body.get("stream") or behaviour == "nostream":
            self._json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
            return
        self._stream(model, behaviour, opts, tokens, usage, body)

    def _stream(self, model: str, behaviour: str, opts: dict[str, str], tokens: list[str],
                usage: dict[str, int], body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if behaviour == "hang":
            self._pause(60.0)
            self._chunk(b"")
            return
        delay = float(opts.get("delay", "0")) if behaviour == "slow" else 0.0
        faults = ("malformed", "cut", "nodone", "errorchunk")
        after = int(opts.get("after", "2")) if behaviour in faults else -1

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        self._event(chunk({"role": "assistant", "content": ""}))
        for i, tok in enumerate(tokens):
            if i == after:
                if behaviour == "malformed":
                    self._chunk(b'data: {"choices": [{"delta": {"content": "oops"\n\n')
                    self._chunk(b"")
                    return
                if behaviour == "cut":
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if behaviour == "nodone":
                    self._chunk(b"")
                    return
                if behaviour == "errorchunk":
                    self._event({"error": {"message": "the fake model overheated", "type": "server_error"}})
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                    return
            if delay:
                self._pause(delay)
            self._event(chunk({"content": tok}))
        self._event(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": model, "choices": [], "usage": usage})
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _reflect(self, body: dict[str, Any], opts: dict[str, str]) -> None:
        """The ``reflect`` behaviour: an error repeating the request's headers and body (see the module docstring)."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        name = next((h for h in ("authorization", "api-key", "x-api-key") if h in headers), "authorization")
        lead = f"{name}: "
        value = headers.get(name, "")
        if "at" in opts:
            # the key itself starts after the header name and any scheme ("Bearer ")
            scheme = value[: len(value) - len(value.split(" ", 1)[-1])] if " " in value else ""
            pad = max(int(opts["at"]) - len(lead) - len(scheme), 0)
        else:
            pad = int(opts.get("pad", "0"))
        text = ("." * pad + f"{lead}{value}; headers={json.dumps(headers)}; body={json.dumps(body)}")
        form = opts.get("form", "json")
        status = int(opts.get("status", "400"))
        if form in ("json", "detail"):
            key = "message" if form == "json" else "detail"
            self._json(status, {"error": {key: text, "type": "invalid_request_error"}})
        elif form == "text":
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        elif form == "badjson":
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._event({"choices": [{"index": 0, "delta": {"content": "Echo:"}, "finish_reason": None}]})
            if form == "midstream":
                self._event({"error": {"message": text, "type": "server_error"}})
            else:  # malformed: one data line that is not JSON
                self._chunk(b"data: " + text.replace("\n", " ").encode() + b"\n\n")
            self._chunk(b"")

    # ---- writing -------------------------------------------------------
    def _event(self, obj: Any) -> None:
        self._chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        """One chunk of the chunked body; empty ``data`` ends the body."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, raising ``_ClientGone`` as soon as the client closes the connection."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        raise _ClientGone()
                except (ConnectionResetError, OSError) as e:
                    raise _ClientGone() from e
                time.sleep(min(left, 0.01))  # the client sent bytes (pipelining): not expected, keep waiting

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def main(argv: list[str] | None = None) -> None:
    """Serve until killed, printing the port first."""
    ap = argparse.ArgumentParser(description="a fake OpenAI-compatible chat-completions server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    srv = FakeLLM(args.host, args.port)
    print(srv.port, flush=True)
    try:
        srv._httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        srv._httpd.server_close()


if __name__ == "__main__":
    main()
