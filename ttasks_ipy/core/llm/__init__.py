"""LLM backends for prompt tasks (the runner itself is ``core/prompt.py``).

Modules, each with one job::

    settings.py   PromptSettings: which backend, model, key variable; the secrets to redact (rules: core/secrets.py)
    errors.py     PromptFailed (a TaskFailed with the partial text)
    loop.py       the one shared event-loop thread, its httpx client and concurrency limits
    chat.py       the OpenAI-compatible chat-completions backend (SSE streaming, retries, faults)
    pycall.py     the Python callable backend ("module:function")

HTTP goes through httpx: it has an asyncio client with streaming bodies,
per-phase timeouts and a connection pool, cancelling a request closes its
connection, and it was already a dependency (no SDK is needed for one
endpoint, and a provider SDK can still be used through the callable backend).
"""
from __future__ import annotations

from .errors import PromptFailed
from .settings import PromptSettings

__all__ = ["PromptFailed", "PromptSettings"]
