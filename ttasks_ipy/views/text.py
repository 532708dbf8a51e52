"""Plain-text rendering of tasks: start lines, notices, the ``--list`` table, logs.

Used in terminal IPython, in frontends without widgets, and as every
display's ``text/plain`` (stable: no live values in start lines).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wcwidth import wcswidth

from ..core import Task, TaskState
from .facts import NO_FACTS, TaskFacts
from .style import duration

MARK = {
    TaskState.SUCCEEDED: "✓",
    TaskState.FAILED: "✗",
    TaskState.CANCELLED: "⊘",
    TaskState.BLOCKED: "⊘",
}


def _short(text: str, width: int = 60) -> str:
    """``text`` on one line of at most ``width`` characters; a script's line breaks show as ``⏎``."""
    text = " ⏎ ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    return text if len(text) <= width else text[: width - 1] + "…"


def title(task: Task, facts: TaskFacts = NO_FACTS) -> str:
    """``fit`` or ``#3``, with ``→ r`` when it delivers into a name."""
    return task.label + (f" → {facts.out}" if facts.out else "")


def start_line(task: Task, facts: TaskFacts = NO_FACTS) -> str:
    """What ``%bg`` shows when it dispatches (stable text for saved notebooks)."""
    verb = "queued" if task.state is TaskState.QUEUED and facts.queued_at_start else "started"
    return f"[bg] {title(task, facts)} {verb} ({task.kind}): {_short(task.record().description)}"


def end_text(task: Task, facts: TaskFacts = NO_FACTS, tail: Iterable[str] = ()) -> str:
    """What a saved notebook keeps of a finished task: what ran, how it ended and what it delivered,
    then the last lines of its output (``tail``, plain text), indented."""
    ran = f"[bg] {title(task, facts)} ({task.kind}): {_short(task.record().description, 100)}"
    lines = [ran, notice(task, task.delivered, (), facts)]
    lines.extend("    " + line for line in tail)
    return "\n".join(lines)


def notice(task: Task, delivered: Iterable[str] = (), kept: Iterable[str] = (), facts: TaskFacts = NO_FACTS) -> str:
    """The one-line notice of a finished task."""
    delivered, kept = list(delivered), list(kept)
    mark = MARK.get(task.state, "•")
    head = f"[bg] {mark} {task.label}"
    where = f" (see %bg --log {task.label})"
    tries = attempts(task)
    if task.state is TaskState.SUCCEEDED:
        line = f"{head} finished in {duration(task.elapsed)}{tries}"
        if delivered:
            line += " → " + ", ".join(delivered)
        elif task.kind == "python" and facts.expression and task.has_value:
            line += ": " + _short(repr(task.value), 70)
    elif task.state is TaskState.FAILED:
        line = f"{head} failed after {duration(task.elapsed)}{tries}: {_short(task.error or task.reason or '', 90)}"
        if delivered:
            line += " → " + ", ".join(delivered)
        line += where
    elif task.state is TaskState.CANCELLED:
        why = task.reason or "cancelled"
        line = (f"{head} {why} after {duration(task.elapsed)}" if why.startswith("cancelled")
                else f"{head} cancelled after {duration(task.elapsed)} ({why})")
    elif task.state is TaskState.BLOCKED:
        line = f"{head} never ran: {task.reason}"
    else:
        line = f"{head} is {task.status}"
    if kept:
        line += f"; not delivered: {', '.join(kept)} (reassigned since dispatch; {kept_where(task, kept, facts)})"
    return line


def kept_where(task: Task, kept: list[str], facts: TaskFacts = NO_FACTS) -> str:
    """Where the values of names not delivered are: ``the value: ttasks_ipy.task('fit').result``."""
    call = f"ttasks_ipy.task({task.name!r})" if task.name else f"ttasks_ipy.task({task.id})"
    if facts.out or not isinstance(task.value, dict):
        return f"the value: {call}.result"
    if len(kept) == 1:  # a statement's names: its result is a dict of them
        return f"the value: {call}.result[{kept[0]!r}]"
    return f"the values are in {call}.result"


def attempts(task: Task) -> str:
    """`` after 3 attempts`` for a task that was retried, else nothing."""
    n = len(task.attempt_reasons)
    return f" after {n + 1} attempts" if n else ""


def graph_notice(graph: Any) -> str:
    """The one-line notice of a finished graph run."""
    st = graph.statistics()
    delivered = [n for t in graph.tasks.values() for n in t.delivered]
    counts = ", ".join(
        f"{n} {word}"
        for n, word in ((st.succeeded, "succeeded"), (st.failed, "failed"), (st.cancelled, "cancelled"),
                        (st.blocked, "blocked"))
        if n
    )
    head = f"[bg] {'✓' if graph.ok else '✗'} graph {graph.name} {'finished' if graph.ok else 'failed'}"
    line = f"{head} in {duration(graph.elapsed)}: {counts}"
    if not graph.ok and graph.error:
        line += f"; {_short(graph.error, 100)}"
    if delivered:
        line += " → " + ", ".join(delivered)
    return line


def ready_line(task: Task) -> str:
    """The notice of a service that became ready."""
    return f"[bg] ▶ {task.label} ready: {_short(task.ready_line or '', 80)}"


def status_line(task: Task, facts: TaskFacts = NO_FACTS) -> str:
    """A live one-line status (for reprs; not stable)."""
    pct, msg = task.progress
    extra = f" {pct:.0f}%" if pct is not None else ""
    extra += f" {msg}" if msg else ""
    what = _short(task.record().description, 50)
    return f"[bg] {title(task, facts)} {task.status}{extra} {duration(task.elapsed)} ({task.kind}): {what}"


def status_and_reason(task: Task) -> str:
    """``failed (exit status 3)``, ``cancelled by user``, ``succeeded``: the reason not repeating the status."""
    status, reason = task.status, task.reason
    if not reason or reason == status:
        return status
    if reason.startswith(status + " "):
        return reason
    return f"{status} ({reason})"


def task_table(tasks: Iterable[Task], facts: Callable[[Task], TaskFacts] | None = None) -> str:
    """The ``%bg --list`` table, one row per task in the order given; ``facts`` adds ``→ r`` targets."""
    rows = [("id", "name", "kind", "status", "elapsed", "reason")]
    for t in tasks:
        reason = t.reason if t.state.terminal and t.state is not TaskState.SUCCEEDED else ""
        if t.state is TaskState.QUEUED and t.attempt:
            reason = f"retry {t.attempt}/{t.spec.retries}"
        rows.append(
            (
                str(t.id),
                " ".join(filter(None, [t.name, f"→ {out}" if facts is not None and (out := facts(t).out) else ""])),
                t.kind,
                t.status,
                duration(t.elapsed) if t.started else "",
                _short(reason or "", 50),
            )
        )
    if len(rows) == 1:
        return "[bg] no tasks"
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal (wide CJK characters take two)."""
    n = wcswidth(text)
    return n if n >= 0 else len(text)  # a control character: count characters


def load_line(stats: Any) -> str:
    """What waits for a worker, and cancelled thread tasks whose code has not returned yet."""
    parts = [f"{stats.running} of {stats.max_workers} workers busy"]
    if stats.queued:
        parts.append(f"{stats.queued} queued")
    if stats.lingering:
        parts.append(
            f"{stats.lingering} cancelled thread task{'s' if stats.lingering != 1 else ''} still finishing "
            "a blocking call (their results are discarded)"
        )
    return "[bg] " + "; ".join(parts)


#: lines of each stream ``%bg --log`` shows unless told otherwise
LOG_TAIL = 200


def _tail(text: str, n: int | None) -> tuple[str, int]:
    """The last ``n`` lines of ``text`` (all when None), and how many lines were left out."""
    if n is None:
        return text, 0
    lines = text.splitlines(keepends=True)
    return "".join(lines[-n:]), max(0, len(lines) - n)


def log_text(task: Task, tail: int | None = LOG_TAIL) -> str:
    """What ``%bg --log`` shows: each retried attempt's reason, the last ``tail`` lines of stdout and of
    stderr (all with None, saying how many were left out and where the whole output is), the traceback."""
    parts: list[str] = [f"[bg] {task.label}: {status_and_reason(task)}"]
    for n, why in enumerate(task.attempt_reasons, 1):
        parts.append(f"[bg] attempt {n} failed: {why}")
    out, out_cut = _tail(task.output, tail)
    err, err_cut = _tail(task.stderr, tail)
    kept = task.output_buffer
    if kept.lost:  # known after the reads above (a removed folder shows when read)
        parts.append(f"[bg] {task.label}: {kept.lost}" + ("" if kept.complete else "; the output is incomplete"))
    if out_cut or err_cut:
        cut = " and ".join(f"{k} line{'s' if k != 1 else ''} of {what}"
                           for k, what in ((out_cut, "stdout"), (err_cut, "stderr")) if k)
        folder = kept.folder
        where = f" (all of it: %bg --log {task.label} --all, or the files in {folder})" if folder else \
            f" (all of it: %bg --log {task.label} --all)"
        parts.append(f"[bg] the first {cut} left out{where}")
    if out:
        parts.append(out.rstrip("\n"))
    if err:
        parts.append("--- stderr ---\n" + err.rstrip("\n"))
    if task.traceback:
        parts.append(task.traceback.rstrip("\n"))
    return "\n".join(parts)


def graph_log(graph: Any, tail: int | None = LOG_TAIL) -> str:
    """What ``%bg --log GRAPH`` shows: each task's status, then the log of each that did not succeed."""
    tasks = list(graph.tasks.values())
    parts = [task_table(tasks)]
    if graph.done():
        parts.append(graph_notice(graph))
    for t in tasks:
        if t.state in (TaskState.FAILED, TaskState.CANCELLED):
            parts.append(log_text(t, tail))
    return "\n".join(parts)
