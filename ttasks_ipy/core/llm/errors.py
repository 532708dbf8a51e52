"""The error a prompt task fails with.

``PromptFailed`` belongs to the engine's hierarchy (``core/errors.py``)::

    TaskError
     └── TaskFailed
          └── PromptFailed      an LLM request failed; ``.partial`` keeps the text streamed before

It lives here because the prompt backend is the only one that raises it.
Messages name the cause and what to do; they never hold the API key, not
even in part (the backends pass every server text through
``PromptSettings.redact`` before cutting it, and ``PromptRunner.run`` passes
the failure through it once more before it leaves for the task).
"""
from __future__ import annotations

from ..errors import TaskFailed


class PromptFailed(TaskFailed):
    """An LLM request failed.

    ``partial`` is the text that had streamed before the failure ('' if none; it
    is also in the task's output), ``status`` the HTTP status when the server
    answered with an error, ``retries`` how many retries were spent.
    """

    def __init__(self, message: str, *, partial: str = "", status: int | None = None, retries: int = 0) -> None:
        super().__init__(message)
        self.partial = partial
        self.status = status
        self.retries = retries

    def __reduce__(self):  # noqa: ANN204 - pickle protocol: keep the keyword fields
        return (_rebuild, (self.args[0] if self.args else "", self.partial, self.status, self.retries))


def _rebuild(message: str, partial: str, status: int | None, retries: int) -> PromptFailed:
    return PromptFailed(message, partial=partial, status=status, retries=retries)
