"""``PromptSettings``: which LLM backend a prompt goes to, and how.

Settings hold the *name* of the environment variable with the API key, never
the key: the key is read from the environment when a request is built, goes
into that request's headers and nowhere else. ``redact`` removes it, the
values of extra headers and a password in the URL, whole or in part, from any
text that might be shown (``core/secrets.py`` has the rules); settings
register these secrets for the process when made, so that the log filter
knows them too.
"""
from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .. import secrets
from ..errors import SpecError

#: the official OpenAI client's default endpoint, used when only a key is set
OPENAI_URL = "https://api.openai.com/v1"

_NOT_CONFIGURED = (
    "no LLM backend configured: set OPENAI_BASE_URL (and OPENAI_MODEL), or c.TTasks.llm_base_url and "
    "c.TTasks.llm_model, or c.TTasks.llm_callable = 'module:function'"
)
_CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class PromptSettings:
    """How prompts are sent. Frozen; make a changed copy with ``with_(**changes)``.

    HTTP backend (any OpenAI-compatible chat-completions endpoint): ``base_url``
    (e.g. ``https://api.openai.com/v1``, ``http://localhost:11434/v1``),
    ``model``, ``api_key_env`` (the NAME of the variable holding the key; no key
    in the environment means no auth header, as local servers want). Azure
    OpenAI: ``base_url`` up to the deployment
    (``https://RES.openai.azure.com/openai/deployments/NAME``) and
    ``api_version``: the key then goes in the ``api-key`` header.

    Python backend: ``callable = "module:function"``, called as
    ``function(prompt, **options)``; it wins over ``base_url`` when both are set.

    ``timeout`` bounds connecting and each wait for data (not the whole answer:
    that is the task's own timeout). ``retries`` counts retries of 429 and 5xx
    answers, made only before the first token, waiting ``Retry-After`` (or
    ``retry-after-ms``) when the server sends it, else ``backoff * 2**n``
    seconds, at most ``max_retry_wait``. ``max_concurrency`` bounds the requests
    in flight at once, for all prompts of the process.
    """

    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)
    timeout: float | None = 300.0
    api_version: str | None = None
    max_concurrency: int = 32
    retries: int = 3
    backoff: float = 0.5
    max_retry_wait: float = 60.0
    include_usage: bool = True
    callable: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_headers", dict(self.extra_headers or {}))
        if self.base_url is not None:
            if not re.match(r"^https?://[^/\s]+", self.base_url):
                raise SpecError(
                    f"llm base_url must start with http:// or https://, not {self._public(self.base_url)!r}"
                )
            object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not self.api_key_env or not re.match(r"^[A-Za-z_]\w*$", self.api_key_env):
            raise SpecError(f"api_key_env must be the NAME of an environment variable, not {self.api_key_env!r}")
        if self.callable is not None and not _CALLABLE_RE.match(self.callable):
            raise SpecError(f"llm callable must be 'module:function', not {self.callable!r}")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise SpecError(f"temperature must be between 0 and 2, not {self.temperature!r}")
        if self.max_tokens is not None and not (isinstance(self.max_tokens, int) and self.max_tokens > 0):
            raise SpecError(f"max_tokens must be a whole number > 0, not {self.max_tokens!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise SpecError(f"llm timeout must be a positive number of seconds (or None), not {self.timeout!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise SpecError(f"max_concurrency must be a whole number >= 1, not {self.max_concurrency!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise SpecError(f"llm retries must be a whole number >= 0, not {self.retries!r}")
        if not self.backoff >= 0 or not self.max_retry_wait >= 0:
            raise SpecError("llm backoff and max_retry_wait must be >= 0 seconds")
        secrets.register_env(self.api_key_env)
        for value in self._secret_values():
            secrets.register_value(value)

    # ---- making settings -----------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> PromptSettings:
        """Settings from ``given`` (the kernel's config), falling back on the environment.

        A ``given`` value of None or ``""`` (a traitlet left at its default)
        means "not configured". Unset ``base_url`` comes
        from ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1`` when the key
        variable is set (its presence only: the key is not read here); unset
        ``model`` from ``OPENAI_MODEL``. Unknown names raise ``SpecError``.
        """
        env = os.environ if environ is None else environ
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise SpecError(f"unknown prompt setting {unknown[0]!r}: use one of {', '.join(sorted(names))}")
        kw = {k: v for k, v in given.items() if v is not None and v != ""}
        key_env = kw.get("api_key_env", "OPENAI_API_KEY")
        if "base_url" not in kw and "callable" not in kw:
            url = env.get("OPENAI_BASE_URL") or (OPENAI_URL if env.get(key_env) else None)
            if url:
                kw["base_url"] = url
        if "model" not in kw and env.get("OPENAI_MODEL"):
            kw["model"] = env["OPENAI_MODEL"]
        return cls(**kw)

    def with_(self, **changes: Any) -> PromptSettings:
        """A copy with ``changes`` applied (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    # ---- checking at dispatch ------------------------------------------
    @property
    def backend(self) -> str | None:
        """'callable', 'http', or None when nothing is configured."""
        if self.callable:
            return "callable"
        if self.base_url:
            return "http"
        return None

    def resolve_model(self, model: str | None = None) -> str | None:
        """The model a prompt uses (``model`` over the setting); ``SpecError`` if it cannot run.

        The one-line errors name the settings to set.
        """
        chosen = model or self.model
        backend = self.backend
        if backend is None:
            raise SpecError(_NOT_CONFIGURED)
        if backend == "http" and not chosen:
            raise SpecError(
                f"no model chosen for the LLM backend at {self.public_url}: pass --model, "
                "or set OPENAI_MODEL or c.TTasks.llm_model"
            )
        return chosen

    # ---- building requests (key read here, at request time) ------------
    @property
    def chat_url(self) -> str:
        """The chat-completions URL, with ``api-version`` for Azure."""
        if not self.base_url:
            raise SpecError(_NOT_CONFIGURED)
        url = self.base_url + "/chat/completions"
        if self.api_version:
            url += "?" + urllib.parse.urlencode({"api-version": self.api_version})
        return url

    @property
    def public_url(self) -> str:
        """``base_url`` without any user:password part, for messages."""
        return self._public(self.base_url or "")

    @staticmethod
    def _public(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.username or parts.password:
            host = parts.hostname or ""
            if parts.port:
                host += f":{parts.port}"
            parts = parts._replace(netloc=host)
        return urllib.parse.urlunsplit(parts)

    def api_key(self) -> str | None:
        """The key, read from the environment now (None if unset or empty)."""
        return os.environ.get(self.api_key_env) or None

    def request_headers(self) -> dict[str, str]:
        """The headers of one request, the key included. Never show or keep them."""
        headers = {"Accept": "text/event-stream", **self.extra_headers}
        key = self.api_key()
        if key:
            if self.api_version:
                headers["api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def shown_headers(self) -> dict[str, str]:
        """The request headers as they may be shown: every value that could be secret is ``***``."""
        shown = {k: "***" for k in self.extra_headers}
        if self.api_key():
            shown["api-key" if self.api_version else "Authorization"] = "***"
        return shown

    def redact(self, text: str) -> str:
        """``text`` with the key, extra header values and the URL's password replaced by ``***``, even in part.

        Credential headers are masked whatever their value (``core/secrets.py``).
        Redact a text before cutting it short.
        """
        return secrets.redact(text, [self.api_key(), *self._secret_values()])

    def _secret_values(self) -> list[str]:
        """The secrets these settings hold themselves: extra header values, a password in the URL."""
        found = [str(v) for v in self.extra_headers.values()]
        password = urllib.parse.urlsplit(self.base_url or "").password
        if password:
            found.append(password)
        return found

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr and getattr(self, f.name) != f.default and f.name != "base_url"
        ]
        if self.base_url:
            shown.insert(0, f"base_url={self.public_url!r}")
        if self.extra_headers:
            shown.append(f"extra_headers=<{', '.join(self.extra_headers)}>")
        return f"PromptSettings({', '.join(shown)})"
