"""Keeping secrets out of every text that leaves the engine: ``redact(text)``.

Text from an LLM server or from a user's callable may repeat the request it
got (some providers echo the key in a 401, a proxy may quote the headers in a
400) and is then shown in notices, ``h.error``, tracebacks and logs. Before
any such text is shown, cut or stored, ``redact`` replaces with ``***``:

1. every *known secret* whole, and every run of ``MIN_RUN`` (8) or more
   consecutive characters of one, wherever it stands: a text cut inside a key
   (by us, a server or a library) keeps no usable piece of it. Eight
   characters of a random key are about 48 bits: enough to matter, and too
   long to occur by chance in a message;
2. the first or last ``EDGE_RUN`` (4) to 7 characters of a known secret of
   at least ``EDGE_MIN`` (12) characters when they stand alone as a word
   (nothing alphanumeric on either side), as at a cut (``... Bearer sk-pr``)
   or in the masked form providers use to name a key (``sk-ab***...wxyz``).
   Inside a longer word such short pieces are left alone: they match by chance
   there, and the rule must not eat ordinary text;
3. the value of any ``Authorization``, ``Proxy-Authorization``, ``api-key``
   or ``x-api-key`` header, and the credential after ``Bearer`` or ``Basic``,
   in the forms that text takes (``Name: value``, JSON, Python reprs, tuples
   of bytes): whatever the value is, known or not.

The known secrets are those handed to ``redact`` (``extra``) and those
registered for the process: values (``register_value``: header values, URL
passwords) and names of environment variables (``register_env``: an API key's
variable, read when redacting, so a key that changes is still known). The
``"ttasks_ipy"`` logger gets a filter that passes each record's message and
traceback through ``redact``.

Redact *before* cutting a text short: a cut first can split a secret into
pieces that a later redaction no longer recognises.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable

#: a run of this many consecutive characters of a secret is redacted anywhere
MIN_RUN = 8
#: a word this long that begins or ends a secret is redacted (for secrets of EDGE_MIN characters or more)
EDGE_RUN = 4
EDGE_MIN = 12
#: values shorter than this are never treated as secrets (they would match everywhere)
MIN_SECRET = 6
MASK = "***"

_HEADER_NAMES = r"(?:proxy-authorization|authorization|x-api-key|api-key)"
# the name (maybe quoted, maybe bytes), a separator, then the value (maybe quoted, maybe a scheme first)
_HEADER_RE = re.compile(
    r"(?i)(?<![\w-])(" + _HEADER_NAMES + r")"
    r"((?:['\"]\s*,\s*b?['\"])|(?:['\"]?\s*[:=]\s*(?:b?['\"])?))"  # ('name', 'value') | name: value | "name": "value"
    r"((?:(?:Bearer|Basic|Token)\s+)?)([^\s'\",;)}\]]+)"
)
_SCHEME_RE = re.compile(r"\b(Bearer|Basic)(\s+)([A-Za-z0-9\-._~+/]{8,}=*)")

_lock = threading.Lock()
_values: set[str] = set()
_env_names: set[str] = set()


def register_value(value: str | None) -> None:
    """Treat ``value`` as a secret for the rest of the process (ignored if shorter than ``MIN_SECRET``)."""
    if value and len(value) >= MIN_SECRET:
        with _lock:
            _values.add(value)


def register_env(name: str) -> None:
    """Treat the value of the environment variable ``name`` as a secret, whatever it is when redacting."""
    with _lock:
        _env_names.add(name)


def known_secrets(extra: Iterable[str | None] = ()) -> list[str]:
    """The secrets ``redact`` removes now: ``extra``, the registered values and variables' values, longest first."""
    with _lock:
        found = set(_values)
        names = list(_env_names)
    found.update(v for v in (os.environ.get(n) for n in names) if v)
    found.update(v for v in extra if v)
    return sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True)


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """``text`` with secrets and credential header values replaced by ``***`` (see the module docstring)."""
    if not text:
        return text
    secrets = known_secrets(extra)
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        spans += _secret_spans(text, secret)
    text = _mask(text, spans)
    text = _HEADER_RE.sub(_header_value, text)
    return _SCHEME_RE.sub(_scheme_value, text)


def _header_value(m: re.Match[str]) -> str:
    value = m.group(4)
    if value.strip("*") == "":
        return m.group(0)
    return m.group(1) + m.group(2) + m.group(3) + MASK


def _scheme_value(m: re.Match[str]) -> str:
    """``Bearer <credential>`` masked, if what follows looks like a credential, not a word of prose."""
    word = m.group(3)
    looks = (
        any(c.isdigit() for c in word)
        or any(c in "=-_.~+/" for c in word)
        or any(a.islower() and b.isupper() for a, b in zip(word, word[1:], strict=False))
    )
    return m.group(1) + m.group(2) + MASK if looks else m.group(0)


def _secret_spans(text: str, secret: str) -> list[tuple[int, int]]:
    """Where ``text`` holds ``secret``, a run of ``MIN_RUN`` of its characters, or a word that begins or ends it."""
    spans: list[tuple[int, int]] = []
    start = text.find(secret)
    while start >= 0:
        spans.append((start, start + len(secret)))
        start = text.find(secret, start + 1)
    if len(secret) > MIN_RUN:
        grams = {secret[i:i + MIN_RUN] for i in range(len(secret) - MIN_RUN + 1)}
        first = {g[0] for g in grams}
        for i in range(len(text) - MIN_RUN + 1):
            if text[i] in first and text[i:i + MIN_RUN] in grams:
                spans.append((i, i + MIN_RUN))
    if len(secret) >= EDGE_MIN:
        for k in range(EDGE_RUN, MIN_RUN):
            for piece in (secret[:k], secret[-k:]):
                at = text.find(piece)
                while at >= 0:
                    end = at + k
                    if not _word_char(text, at - 1) and not _word_char(text, end):
                        spans.append((at, end))
                    at = text.find(piece, at + 1)
    return spans


def _word_char(text: str, i: int) -> bool:
    return 0 <= i < len(text) and text[i].isalnum()


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each run of overlapping or touching ``spans`` replaced by one ``***``."""
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    pos = 0
    cur_start, cur_end = spans[0]
    for s, e in spans[1:]:
        if s <= cur_end:
            cur_end = max(cur_end, e)
            continue
        out += [text[pos:cur_start], MASK]
        pos = cur_end
        cur_start, cur_end = s, e
    out += [text[pos:cur_start], MASK, text[cur_end:]]
    return "".join(out)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut). Redact first."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


class RedactingFilter(logging.Filter):
    """Passes every record's message, traceback and stack through ``redact`` (on the ``"ttasks_ipy"`` logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit: leave it to the handler's own error path
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add the ``RedactingFilter`` to ``logger`` (the ``"ttasks_ipy"`` logger) once."""
    logger = logger or logging.getLogger("ttasks_ipy")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


install_log_filter()

__all__ = [
    "MASK", "MIN_RUN", "RedactingFilter", "clip", "install_log_filter", "known_secrets", "redact",
    "register_env", "register_value",
]
