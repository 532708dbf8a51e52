"""Searching for a secret, whole or in part, in everything a test can read (no fixtures here).

A leak is the secret itself or any run of ``n`` (8) consecutive characters of
it, in any text gathered from the user's side: task errors and tracebacks,
events, log records, files, kernel messages. Make secrets with ``make_secret``:
random letters and digits, so that no 8-character piece of one turns up in
other text by chance (hex would: widget ids are 32 hex digits).

    leaks = find_leaks({"h.error": t.error, ...}, key)
    assert_no_leak(texts, key)          # fails naming where each piece was found

The reliability suite (``tests/reliability/``) and the normal run share this.
"""
from __future__ import annotations

import os
import secrets as _random
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ALPHABET = string.ascii_letters + string.digits


def make_secret(prefix: str = "sk-test-", length: int = 40) -> str:
    """A key that looks like a provider's: ``prefix`` and ``length`` random letters and digits."""
    return prefix + "".join(_random.choice(_ALPHABET) for _ in range(length))


def fragments(secret: str, n: int = 8) -> set[str]:
    """Every run of ``n`` consecutive characters of ``secret`` (the secret itself when shorter)."""
    if len(secret) <= n:
        return {secret}
    return {secret[i:i + n] for i in range(len(secret) - n + 1)}


@dataclass(frozen=True)
class Leak:
    """A piece of a secret found in the text gathered from ``where``."""

    where: str
    piece: str
    context: str

    def __str__(self) -> str:
        return f"{self.where}: {self.piece!r} in ...{self.context}..."


Texts = Mapping[str, Any] | Iterable[tuple[str, Any]]


def find_leaks(texts: Texts, *secrets: str, n: int = 8) -> list[Leak]:
    """Every place where a secret of ``secrets``, or ``n`` consecutive characters of one, occurs."""
    items = texts.items() if isinstance(texts, Mapping) else texts
    pieces = set().union(*(fragments(s, n) for s in secrets)) if secrets else set()
    leaks = []
    for where, value in items:
        text = value if isinstance(value, str) else repr(value)
        for piece in pieces:
            at = text.find(piece)
            if at >= 0:
                leaks.append(Leak(where, piece, text[max(at - 40, 0): at + len(piece) + 40]))
                break  # one piece per place is enough to show it
    return leaks


def assert_no_leak(texts: Texts, *secrets: str, n: int = 8) -> None:
    """Fail, naming each place, if any piece of ``n`` characters of a secret is in ``texts``."""
    leaks = find_leaks(texts, *secrets, n=n)
    assert not leaks, f"{len(leaks)} leak(s):\n" + "\n".join(map(str, leaks[:10]))


def task_texts(task: Any, label: str | None = None) -> dict[str, Any]:
    """What a user can read about a core task: error, reason, traceback, exception and its chain, output, meta."""
    label = label or f"task {getattr(task, 'label', '?')}"
    out: dict[str, Any] = {
        f"{label} repr": repr(task), f"{label} error": task.error, f"{label} reason": task.reason,
        f"{label} traceback": task.traceback, f"{label} output": task.output, f"{label} stderr": task.stderr,
    }
    e = task.exception
    if e is not None:
        out[f"{label} str(exception)"] = str(e)
        out[f"{label} repr(exception)"] = repr(e)
        out[f"{label} vars(exception)"] = repr(vars(e))
        out[f"{label} cause"] = repr(e.__cause__)
        out[f"{label} context"] = repr(e.__context__)
    runner = task.spec.runner
    for name in ("meta", "describe", "request_info"):
        attr = getattr(runner, name, None)
        if attr is not None:
            out[f"{label} runner.{name}"] = attr() if callable(attr) else attr
    return out


def dir_texts(root: str | os.PathLike[str]) -> dict[str, str]:
    """Every file under ``root``, read as text."""
    found = {}
    for path in Path(root).rglob("*"):
        if path.is_file():
            found[f"file {path}"] = path.read_text(encoding="utf-8", errors="replace")
    return found


# ---- the reflecting server's scenarios (tests/llm_server.py, behaviour ``reflect``) ----------
#: where each form of reflected error is cut short, counted in the reflected text
REFLECT_CUTS = {"json": 299, "detail": 287, "text": 199, "midstream": 299, "malformed": 79, "badjson": 79}


def reflect_offsets(cut: int, key_len: int, full: bool = False) -> list[int]:
    """Where to place the key in a reflected text cut at ``cut``.

    The reduced set straddles the cut leaving 1, 4, 7, 8, all but 4 and all but
    1 characters of the key before it, and puts the key whole just before and
    just after. ``full``: every offset from 0 to past the cut (so each copy of
    the key in the text crosses the cut in turn).
    """
    if full:
        return list(range(0, cut + 3))
    seen = [cut - v for v in (1, 4, 7, 8, key_len - 4, key_len - 1, key_len)] + [cut + 1]
    return sorted({a for a in seen if a >= 0})


def reflect_models(key_len: int, full: bool = False, forms: Iterable[str] = REFLECT_CUTS) -> list[str]:
    """Model names for the reflecting server: each form at each offset of ``reflect_offsets``."""
    return [f"reflect?form={f}&at={a}" for f in forms for a in reflect_offsets(REFLECT_CUTS[f], key_len, full)]


# ---- prompts in the core against the reflecting server -------------------------------------
class Events:
    """Every event of an executor's bus, as text (subscribe before submitting)."""

    def __init__(self, ex: Any) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        ex.bus.subscribe(self._on)

    def _on(self, ev: Any) -> None:
        with self._lock:
            self.seen += [repr(ev), repr(ev.data)]


def reflect_settings(base_url: str, monkeypatch: Any, auth: str, key: str, header_secret: str) -> tuple[Any, list[str]]:
    """Prompt settings sending ``key`` as ``auth`` says, and the secrets to search for.

    ``bearer``: ``Authorization: Bearer`` from ``$OPENAI_API_KEY``; ``azure``: the
    ``api-key`` header; ``header``: no key, ``header_secret`` in an ``x-api-key`` extra header.
    """
    from ttasks_ipy.core.runners.prompt import PromptSettings

    if auth == "bearer":
        monkeypatch.setenv("OPENAI_API_KEY", key)
        return PromptSettings(base_url=base_url, retries=0, backoff=0.01), [key]
    if auth == "azure":
        monkeypatch.setenv("OPENAI_API_KEY", key)
        base = base_url.replace("/v1", "/openai/deployments/d")
        return PromptSettings(base_url=base, api_version="2024-10-21", retries=0), [key]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return PromptSettings(base_url=base_url, retries=0, extra_headers={"x-api-key": header_secret}), [header_secret]


def sweep(ex: Any, settings: Any, models: list[str], timeout: float = 60) -> list[Any]:
    """One prompt per model name, all at once on ``ex``; the finished tasks."""
    from ttasks_ipy.core import TaskSpec
    from ttasks_ipy.core.runners.prompt import PromptRunner

    tasks = [ex.submit(TaskSpec(PromptRunner("tell me", settings, model=m), name=f"r{i}"))
             for i, m in enumerate(models)]
    ex.wait(tasks, timeout=timeout)
    return tasks


def everything(ex: Any, tasks: list[Any], events: Events, caplog: Any) -> dict[str, Any]:
    """All a user can read after ``tasks``: each task's texts, the events, the log, the output files."""
    texts: dict[str, Any] = {"caplog": caplog.text, "events": "\n".join(events.seen)}
    for t in tasks:
        texts.update(task_texts(t, f"{t.label} ({t.spec.runner.model})"))
    if ex.output_dir is not None:
        texts.update(dir_texts(ex.output_dir))
    return texts
