"""The kernel's side of the ledger: its settings, this kernel's writer, and the ``%bg`` actions on past tasks.

One ``KernelLedger`` per session. It starts a ``LedgerWriter`` on the
executor's bus (unless ``TTasks.ledger`` is off), tells it what only the
kernel knows of a task (its graph, its ``-o`` target, the values it hands
over), says the writer's warnings at the next cell boundary, and answers
``--history``, ``--log`` (past tasks), ``--load`` and ``--forget``. It starts
detached commands and, at load, finds again those that no running kernel of
this notebook follows.

A kernel's tasks belong to its *session*: the notebook's path when the
frontend gives it (``__session__`` in the namespace, ``JPY_SESSION_NAME``),
else the working directory.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import stat
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..core import TaskSpec
from ..core.ledger import Entry, Extras, LedgerError, LedgerWriter
from ..core.ledger.detached import DetachedRunner, read_exit, trusted
from ..core.ledger.replay import KeptResult
from ..core.ledger.results import unpack
from ..core.runners.bash import CommandResult
from ..views import history as views
from .delivery import values_to_deliver
from .dispatch import Dispatch

if TYPE_CHECKING:
    from ..core import Task
    from .session import Session

#: the key under which the ledger keeps a value that went into no name (an expression without -o)
VALUE = ""
#: the settings this module follows while the session runs
SETTINGS = ("ledger", "ledger_path", "ledger_result_cap")
#: how long ``%load_ext`` waits for re-found detached commands that already ended (delivered at load)
REFIND_WAIT = 5.0
_AGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def default_path() -> Path:
    """``ttasks_ipy/ledger.sqlite`` under the Jupyter data directory."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "ttasks_ipy" / "ledger.sqlite"


def session_key(shell: Any) -> str:
    """What this kernel's tasks belong to: the notebook's path if the frontend gave it, else the working directory."""
    name = shell.user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
    return str(name) if name else os.getcwd()


def age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as seconds; ``UsageError`` otherwise."""
    m = _AGE.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"%bg --older-than: write an age like 30d, 12h, 90m or 45s, not {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def check_trusted(path: Path) -> None:
    """``LedgerError`` unless ``path`` and its folder belong to this user and no one else may write them.

    Loading a result unpickles it, which runs code: a file someone else could
    write is a way to run their code in this kernel.
    """
    for p in (path, path.parent):
        st = p.stat()
        if st.st_uid != os.getuid():
            raise LedgerError(f"{p} belongs to another user (uid {st.st_uid}): not loading results from it")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise LedgerError(f"{p} may be written by others (mode {stat.S_IMODE(st.st_mode):o}): not loading "
                              f"results from it (chmod go-w {p})")


class KernelLedger:
    """The ledger of one session: writing, the actions on past tasks, detached commands."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.config = session.config
        #: this kernel in the ledger (one per load)
        self.kid = uuid.uuid4().hex[:12]
        self.key = session_key(session.shell)
        self.writer: LedgerWriter | None = None
        self._warnings: collections.deque[str] = collections.deque()
        if self.config.ledger:
            self._start()
        self.config.observe(self._on_config, names=list(SETTINGS))

    # ---- the writer ----------------------------------------------------
    @property
    def path(self) -> Path:
        """The ledger file in use (the setting, or the default)."""
        return Path(os.path.expanduser(self.config.ledger_path)) if self.config.ledger_path else default_path()

    def _start(self) -> None:
        self.writer = LedgerWriter(
            self.path, self.session.executor.bus, kid=self.kid, session=self.key, extras=self._extras,
            result_cap=self.config.ledger_result_cap, file_cap=self.config.file_cap,
            on_warning=self._warnings.append,
        )

    def _stop(self) -> None:
        w, self.writer = self.writer, None
        if w is not None:
            w.close()

    def _on_config(self, change: dict[str, Any]) -> None:
        name = change["name"]
        if name == "ledger_result_cap":
            if self.writer is not None:
                self.writer.result_cap = change["new"]
            return
        self._stop()
        if self.config.ledger:
            self._start()
            print(f"[bg] ledger: recording tasks in {self.path}")
        else:
            print("[bg] ledger off: new tasks are not recorded (history stays in the file)")

    def _extras(self, task: Task) -> Extras:
        """What the writer cannot read from a record (called on the writer's thread)."""
        d = self.session.dispatches.get(task)
        if d is None:
            return Extras()
        values = None
        if task.state.terminal and task.kind in ("python", "prompt"):
            values = values_to_deliver(task, d)
            if not values and d.expression and task.ok and task.has_value:
                values = {VALUE: task.value}  # an expression's value, delivered nowhere: loaded with -o
        return Extras(graph=d.graph, node=d.node, values=values, target=d.out)

    def say_warnings(self) -> None:
        """Print what went wrong with the ledger since the last boundary (each problem once)."""
        while self._warnings:
            print(self._warnings.popleft())

    def _ledger(self, what: str) -> Any:
        w = self.writer
        if w is None:
            raise UsageError(f"%bg {what}: the ledger is off (%config TTasks.ledger = True to turn it on)")
        if w.ledger is None:
            raise UsageError(f"%bg {what}: the ledger {self.path} cannot be read now ({w.refused or w.problem})")
        w.flush(2.0)  # this kernel's latest tasks are in it
        return w.ledger

    # ---- actions ---------------------------------------------------------
    def history(self, n: int, all_kernels: bool) -> str:
        """The ``--history`` table: this notebook's last ``n`` tasks (every notebook's with ``all_kernels``)."""
        ledger = self._ledger("--history")
        entries = ledger.history(n, session=None if all_kernels else self.key)
        table = views.history_table(entries, sessions=all_kernels)
        total = ledger.count(None if all_kernels else self.key)
        if total > len(entries):
            table += f"\n[bg] the last {len(entries)} of {total:,} (%bg --history N for more)"
        return table

    def find(self, key: str, what: str) -> Entry:
        """The past task ``key`` (a name, ``graph.task``, or a ledger id); ``UsageError`` naming it if none."""
        entry = self._ledger(what).find(key, self.key)
        if entry is None:
            raise UsageError(f"%bg {what}: no task {key!r} in the ledger (see %bg --history)")
        return entry

    def log(self, key: str, tail: int | None) -> str | None:
        """``--log`` of a past task, or None when the ledger has no such task."""
        if self.writer is None or self.writer.ledger is None:
            return None
        entry = self._ledger("--log").find(key, self.key)
        if entry is None:
            return None
        texts, whole = [], True
        for stream in ("stdout", "stderr"):
            chars = entry.stdout_chars if stream == "stdout" else entry.stderr_chars
            path = Path(entry.folder) / f"{stream}.txt" if entry.folder else None
            if path is not None and path.exists():
                texts.append(path.read_text(encoding="utf-8", errors="replace"))
            elif chars:
                texts.append(self.writer.ledger.tails(entry.id)[0 if stream == "stdout" else 1])
                whole = False
            else:
                texts.append("")
        return views.past_log(entry, texts[0], texts[1], tail, whole=whole, folder=entry.folder)

    def load(self, key: str, out: str | None) -> None:
        """``--load``: bring a past task's kept result (a graph's: all of its names) into the namespace."""
        ledger = self._ledger("--load")
        entry = ledger.find(key, self.key)
        entries = [entry] if entry is not None else ledger.graph_entries(key, self.key)
        if not entries:
            raise UsageError(f"%bg --load: no task or graph {key!r} in the ledger (see %bg --history)")
        if out is not None and (len(entries) > 1 or not out.isidentifier()):
            raise UsageError("%bg --load: -o VAR takes a Python name, for one task (a graph's tasks load "
                             "under their own names)")
        try:
            check_trusted(ledger.path)
        except (LedgerError, OSError) as e:
            raise UsageError(f"%bg --load: {e}") from None
        values: dict[str, Any] = {}
        missing = []
        for e in entries:
            got = self._values(ledger, e)
            if got is None:
                if e.kind != "bash":
                    missing.append(e)
                continue
            values.update(got)
        if entry is not None and not values:
            raise UsageError(f"%bg --load: {self._why_nothing(entry)}")
        if out is None and VALUE in values:
            raise UsageError(f"%bg --load: {entries[0].label} kept a value that went into no name: "
                             f"give one (%bg --load {key} -o VAR)")
        if out is not None:
            if len(values) != 1:
                raise UsageError(f"%bg --load: {entry.label} kept {len(values)} names ({', '.join(values)}): "
                                 "drop -o to load them under their own names")
            values = {out: next(iter(values.values()))}
        ns = self.session.shell.user_ns
        ns.update(values)
        src = entries[0]
        label = key if entry is None else src.label
        names = ", ".join(values) or "nothing"
        line = f"[bg] loaded {names} from {label} (ledger #{src.id}, {views.when(src.created)})"
        if missing and entry is None:
            line += f"; nothing kept of {', '.join(e.label for e in missing)}"
        print(line)

    def _values(self, ledger: Any, e: Entry) -> dict[str, Any] | None:
        if e.kind == "bash" and e.state in ("succeeded", "failed") and e.target:
            return {e.target: self._command_result(e)}
        if not e.has_result:
            return None
        blob = ledger.result_blob(e.id)
        try:
            return unpack(blob)
        except Exception as err:  # a class that is gone, a module not installed
            raise UsageError(f"%bg --load: the result of {e.label} cannot be read back: "
                             f"{type(err).__name__}: {err}") from None

    def _command_result(self, e: Entry) -> CommandResult:
        texts = []
        for stream in ("stdout", "stderr"):
            path = Path(e.folder) / f"{stream}.txt" if e.folder else None
            texts.append(path.read_text(encoding="utf-8", errors="replace") if path and path.exists() else "")
        m = re.match(r"exit status (\d+)", e.reason or "")
        code = 0 if e.state == "succeeded" else int(m.group(1)) if m else -1
        took = (e.finished - e.started) if e.finished and e.started else 0.0
        return CommandResult(e.description[1:], texts[0], texts[1], code, took)

    @staticmethod
    def _why_nothing(e: Entry) -> str:
        if e.active or e.status == "lost":
            return f"{e.label} is {views.status_of(e)}: it has no result yet"
        if e.result_note:
            return f"{e.label}: {e.result_note}"
        if e.kind == "bash":
            return f"{e.label} is a command without -o: its output is its result (%bg --log {e.label})"
        return f"{e.label} {e.status} without a value to keep"

    def forget(self, keys: list[str], older_than: str | None) -> None:
        """``--forget``: remove past tasks (and their output files) from the ledger."""
        ledger = self._ledger("--forget")
        ids: list[int] = []
        labels: list[str] = []
        if older_than is not None:
            ids = ledger.older_than(age(older_than))
            labels = [f"{len(ids)} task{'s' if len(ids) != 1 else ''} older than {older_than}"]
        for key in keys:
            entry = ledger.find(key, self.key)
            found = [entry] if entry is not None else ledger.graph_entries(key, self.key)
            if not found:
                raise UsageError(f"%bg --forget: no task or graph {key!r} in the ledger (see %bg --history)")
            for e in found:
                if e.active:
                    raise UsageError(f"%bg --forget: {e.label} is {views.status_of(e)}: cancel it first "
                                     f"(%bg --cancel {e.label})")
                ids.append(e.id)
            labels.append(key)
        gone = ledger.forget(sorted(set(ids)))
        print(f"[bg] forgot {gone} task{'s' if gone != 1 else ''} ({', '.join(labels)})")

    # ---- detached commands ------------------------------------------------
    def detached_runner(self, command: str, env: dict[str, str], cwd: str | None) -> DetachedRunner:
        """The runner of ``%bg --detach !command`` (its output goes to the ledger's files)."""
        ledger = self._ledger("--detach")
        return DetachedRunner(
            command, env=env, cwd=cwd, grace=self.config.grace,
            folder_for=lambda tid: ledger.output_folder(self.kid, tid, create=True),
            on_launch=self._launched,
        )

    def _launched(self, runner: DetachedRunner) -> None:
        w = self.writer
        if w is None:
            return
        for task in reversed(self.session.executor.tasks()):  # cancelled meanwhile, it was still started
            if task.spec.runner is runner:
                w.touch(task)  # its pid and folder reach the file at once
                return

    def refind(self) -> None:
        """At load: follow again the detached commands of this notebook that no running kernel follows."""
        w = self.writer
        if w is None or w.ledger is None:
            return
        ledger = w.ledger
        try:
            found = ledger.detached_to_refind(self.key, self.kid)
        except Exception:
            return
        followers: list[Task] = []
        ended: list[Task] = []
        for e in found:
            if not ledger.claim(e.id, e.kid, self.kid, -e.id):
                continue  # another kernel of this notebook took it first
            if e.pid is None or not e.folder:
                ledger.update(e.id, state="failed", status="failed",
                              reason="its kernel ended before its process was recorded")
                continue
            over = read_exit(Path(e.folder)) is not None or not trusted(e.pid, e.pid_start)
            runner = DetachedRunner(e.description[1:], grace=self.config.grace,
                                    found=(e.folder, e.pid, e.pid_start))

            def prepare(task: Task, e: Entry = e) -> None:
                ledger.update(e.id, tid=task.id)
                w.adopt(task, e)

            spec = TaskSpec(runner, name=e.name if e.name and self.session.find(e.name) is None else None)
            plan = Dispatch(out=e.target, keeps_failed_result=True)
            plan.remember_targets([e.target] if e.target else [], self.session.shell.user_ns)
            task = self.session.submit(spec, dispatch=plan, prepare=prepare, quiet=over)
            followers.append(task)
            if over:
                ended.append(task)
        if not followers:
            return
        said = [f"{t.label} ({'ended while no kernel watched' if t in ended else 'running'})" for t in followers]
        print(f"[bg] found {len(followers)} detached task{'s' if len(followers) != 1 else ''} again: "
              f"{', '.join(said)}")
        if ended:  # their results are delivered at the end of this cell, with their notices
            self.session.executor.wait(ended, timeout=REFIND_WAIT)

    # ---- graphs --------------------------------------------------------------
    def record_graph(self, name: str, line: str, cell: str) -> None:
        """Keep a graph run's cell as typed (for ``--rerun`` in a later kernel)."""
        if self.writer is not None:
            self.writer.record_graph(name, line, cell)

    def rerun(self, key: str) -> None:
        """``--rerun GRAPH``: run again what did not succeed; after a restart, from the graph's kept cell."""
        from ..core.graph import GraphRun
        from .graph_magic import bgraph

        ns = self.session.shell.user_ns
        live = ns.get(key)
        if isinstance(live, GraphRun):
            if live.status == "running":
                raise UsageError(f"%bg --rerun: graph {key} is running: wait for it or cancel it first")
            if live.ok:
                print(f"[bg] graph {key}: every task succeeded; nothing to rerun")
                return
            live.rerun()
            self.session.display_graph(live, f"[bg] graph {key} rerun: what succeeded stays")
            return
        ledger = self._ledger("--rerun")
        stored = ledger.graph_cell(key, self.key)
        if stored is None:
            raise UsageError(f"%bg --rerun: no graph {key!r} here or in the ledger (run it with %%bgraph {key})")
        line, cell = stored
        entries = {e.name: e for e in ledger.graph_entries(key, self.key)}
        try:
            check_trusted(ledger.path)
        except (LedgerError, OSError) as e:
            raise UsageError(f"%bg --rerun: {e}") from None
        kept: list[str] = []

        def keep(nodes: list[Any]) -> list[Any]:
            by_name = {n.name: n for n in nodes}
            again: dict[str, bool] = {}

            def reruns(name: str) -> bool:
                if name not in again:
                    again[name] = True  # a cycle is the compiler's to report
                    n = by_name[name]
                    again[name] = self._kept(ledger, entries.get(name), n) is None or any(map(reruns, n.deps))
                return again[name]

            out = []
            for n in nodes:
                if reruns(n.name):
                    out.append(n)
                    continue
                runner = self._kept(ledger, entries[n.name], n)
                out.append(dataclasses.replace(n, make_runner=runner))
                kept.append(n.name)
            return out

        bgraph(self.session, line, cell, ns, adjust=keep)
        left = [n for n in entries if n not in kept]
        print(f"[bg] graph {key} rerun from the ledger: kept {', '.join(kept) or 'nothing'}"
              + (f"; running {', '.join(left)} again" if left else ""))

    def _kept(self, ledger: Any, e: Entry | None, node: Any) -> KeptResult | None:
        """The kept result of a graph task that succeeded, as a runner; None when it must run again."""
        if e is None or e.state != "succeeded" or e.kind != node.kind:
            return None
        if e.kind == "bash":
            if not e.folder and (e.stdout_chars or e.stderr_chars):
                return None  # its output (what dependents read) is gone
            return KeptResult("bash", e.description, self._command_result(e))
        if not e.has_result:
            return None
        values = unpack(ledger.result_blob(e.id))
        if VALUE in values:
            return KeptResult(e.kind, e.description, values[VALUE])
        return KeptResult(e.kind, e.description, values, statement=True)

    def release_detached(self) -> None:
        """Let go of the detached commands this kernel follows (they run on; the next kernel finds them)."""
        for task in self.session.executor.active():
            if getattr(task.spec.runner, "detached", False):
                task.spec.runner.release()

    def close(self) -> None:
        """Write what waits and close the file."""
        self._stop()


__all__ = ["KernelLedger", "age", "check_trusted", "default_path", "session_key"]
