"""Plain-text rendering of the ledger: the ``%bg --history`` table and the log of a past task."""
from __future__ import annotations

import time
from collections.abc import Iterable

from wcwidth import wcswidth

from ..core.ledger import Entry
from .style import duration

#: how a task's start time is shown (local time)
WHEN = "%Y-%m-%d %H:%M"


def when(t: float) -> str:
    """``2026-12-02 17:20``: the local time ``t`` stands for."""
    return time.strftime(WHEN, time.localtime(t))


def _short(text: str, width: int) -> str:
    text = " ⏎ ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    return text if len(text) <= width else text[: width - 1] + "…"


def _width(text: str) -> int:
    n = wcswidth(text)
    return n if n >= 0 else len(text)


def status_of(e: Entry) -> str:
    """``failed (exit status 3)``, ``lost``, ``running (detached)``: the status and its reason, once."""
    status, reason = e.status, e.reason
    if status == "lost":
        return "lost (its kernel ended while it ran)"
    if e.detached and e.state == "running":
        return "running (detached)"
    if not reason or reason == status:
        return status
    if reason.startswith(status + " "):
        return reason
    return f"{status} ({reason})"


def kept(e: Entry) -> str:
    """What of its result the ledger holds: the names (``→ x, y``) and what was not kept."""
    parts = []
    if e.result_names:
        parts.append("→ " + ", ".join(n or "value" for n in e.result_names))
    elif e.kind == "bash" and e.target:
        parts.append(f"→ {e.target}")  # its CommandResult, made again from the kept output
    if e.result_note:
        parts.append(e.result_note)
    return "; ".join(parts)


def history_table(entries: Iterable[Entry], *, sessions: bool = False) -> str:
    """The ``%bg --history`` table, newest first as given; ``sessions`` adds the notebook of each."""
    head = ["id", "started", "name", "kind", "status", "elapsed", "what", "kept"]
    if sessions:
        head.append("notebook")
    rows = [tuple(head)]
    for e in entries:
        took = duration((e.finished or e.started) - e.started) if e.started and e.finished else ""
        row = [str(e.id), when(e.created), e.label, e.kind, _short(status_of(e), 44), took,
               _short(e.description, 40), _short(kept(e), 60)]
        if sessions:
            row.append(_short(e.session, 40))
        rows.append(tuple(row))
    if len(rows) == 1:
        return "[bg] no tasks in the ledger yet"
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _tail(text: str, n: int | None) -> tuple[str, int]:
    if n is None:
        return text, 0
    lines = text.splitlines(keepends=True)
    return "".join(lines[-n:]), max(0, len(lines) - n)


def past_log(e: Entry, stdout: str, stderr: str, tail: int | None, *, whole: bool, folder: str | None) -> str:
    """What ``%bg --log`` shows of a task from the ledger: its status, then the last ``tail`` lines of each stream.

    ``whole`` says whether the texts are the whole output (from the files) or only the tails kept in the row.
    """
    parts = [f"[bg] {e.label} (ledger #{e.id}, started {when(e.created)}): {status_of(e)}"]
    if e.error and e.error != e.reason and e.state != "succeeded":
        parts.append(f"[bg] {e.error}")
    if e.output_note:
        parts.append(f"[bg] {e.output_note}")
    out, out_cut = _tail(stdout, tail)
    err, err_cut = _tail(stderr, tail)
    if not whole and (e.stdout_chars or 0) + (e.stderr_chars or 0) > len(stdout) + len(stderr):
        parts.append("[bg] only the end of the output was kept (its files are gone)")
    if out_cut or err_cut:
        cut = " and ".join(f"{k} line{'s' if k != 1 else ''} of {what}"
                           for k, what in ((out_cut, "stdout"), (err_cut, "stderr")) if k)
        where = f", or the files in {folder}" if folder else ""
        parts.append(f"[bg] the first {cut} left out (all of it: %bg --log {e.label} --all{where})")
    if out:
        parts.append(out.rstrip("\n"))
    if err:
        parts.append("--- stderr ---\n" + err.rstrip("\n"))
    return "\n".join(parts)


__all__ = ["WHEN", "history_table", "kept", "past_log", "status_of", "when"]
