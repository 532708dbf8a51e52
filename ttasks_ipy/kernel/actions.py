"""The actions of ``%bg``: ``--list``, ``--cancel``, ``--wait``, ``--log``, ``--dashboard`` and the ledger's
``--history``, ``--load``, ``--forget``, ``--rerun``. The magic parses the line; this module acts on it."""
from __future__ import annotations

import argparse
import time
from typing import Any

from IPython.core.error import UsageError

from ..core import Task, WaitTimeout
from ..core.graph import GraphRun
from ..views import text
from ..views.facts import NO_FACTS
from .graph_magic import find_in_graphs
from .readiness import awaits_ready, wait_ready
from .session import Session


class Actions:
    """Carries out a parsed ``%bg`` action against the session; prints its answer."""

    def __init__(self, shell: Any, session: Session) -> None:
        self.shell = shell
        self.session = session

    def run(self, a: argparse.Namespace) -> Any:
        """Carry out action ``a`` (the action parser's result, checked for options that do not go together)."""
        if a.history is not None:
            print(self.session.ledger.history(a.history, a.all_kernels))
            return None
        if a.load:
            self.session.ledger.load(a.load[0], a.out)
            return None
        if a.rerun:
            self.session.ledger.rerun(a.rerun[0])
            return None
        if a.forget is not None:
            if not a.forget and a.older_than is None:
                raise UsageError("%bg --forget: name the tasks (NAME, ID, a graph), or give --older-than AGE")
            self.session.ledger.forget(a.forget, a.older_than)
            return None
        if a.list:
            print(text.task_table(self.session.tasks(), self.session.dispatches.facts))
            st = self.session.executor.statistics()
            if st.queued or st.lingering:
                print(text.load_line(st))
            return None
        if a.dashboard:
            return self._dashboard()
        if a.log:
            if a.all and a.tail is not None:
                raise UsageError("%bg --log: --tail N or --all, not both")
            tail = None if a.all else (a.tail or text.LOG_TAIL)
            try:
                task = self.find(a.log[0])
            except UsageError:
                past = self.session.ledger.log(a.log[0], tail)  # a task of an earlier kernel
                if past is None:
                    raise
                print(past)
                return None
            print(text.graph_log(task, tail) if isinstance(task, GraphRun) else text.log_text(task, tail))
            return None
        if a.cancel is not None:
            return self._cancel(a.cancel)
        return self._wait(a.wait, a.timeout)

    def find(self, key: str) -> Any:
        """The task, graph or graph task that ``key`` names (a name, an id, a variable holding a handle)."""
        found = find_in_graphs(self.shell.user_ns, key)
        if found is not None:
            return found
        held = self.shell.user_ns.get(key)
        if isinstance(held, Task) and self.session.find(str(held.id)) is held:
            return held  # a variable holding a handle: %bg --wait h
        if "." in key and isinstance(self.shell.user_ns.get(key.split(".")[0]), GraphRun):
            graph = self.shell.user_ns[key.split(".")[0]]
            raise UsageError(f"%bg: graph {graph.name} has no task {key.split('.', 1)[1]!r} "
                             f"(it has: {', '.join(n.name for n in graph.nodes)})")
        task = self.session.find(key)
        if task is None:
            known = ", ".join(t.label for t in self.session.tasks()[-8:]) or "none yet"
            raise UsageError(f"%bg: no task {key!r} (known: {known}; see %bg --list)")
        return task

    def _targets(self, keys: list[str], verb: str) -> list[Any]:
        if not keys:
            raise UsageError(f"%bg --{verb}: name the tasks (a name, an id, several, or all)")
        if keys == ["all"]:
            return self.session.executor.active()
        return [self.find(k) for k in keys]

    def _cancel(self, keys: list[str]) -> None:
        tasks = self._targets(keys, "cancel")
        done = [t.label for t in tasks if (t.cancel() if isinstance(t, GraphRun) else t.cancel())]
        skipped = [t.label for t in tasks if t.label not in done]
        msg = f"[bg] cancelled: {', '.join(done)}" if done else "[bg] nothing to cancel"
        if skipped:
            msg += f" (already finished: {', '.join(skipped)})"
        print(msg)

    def _wait(self, keys: list[str], timeout: float | None) -> None:
        mode = "all"
        if keys in ([], ["all"]):  # a service never ends on its own: waiting for all means tasks
            # with those that ended but were not handed over yet (their end may still be on its way
            # to the inbox), so all are handed over (and said) in one go
            tasks = [t for t in self.session.tasks() if not t.spec.service and self._not_handed(t)]
        elif keys == ["any"]:
            tasks, mode = [t for t in self.session.executor.active() if not t.spec.service], "any"
        else:
            tasks = [self.find(k) for k in keys]
        graphs = [t for t in tasks if isinstance(t, GraphRun)]
        services = [t for t in tasks if awaits_ready(t)]  # named services with --ready: waited for until ready
        tasks = [t for t in tasks if not isinstance(t, GraphRun) and t not in services]
        self.session.printed_now.clear()
        if not tasks and not graphs and not services:
            handed = self.session.delivery.drain(at_boundary=True) if mode == "all" else []
            self._answer(handed)  # nothing runs: what already finished is handed over, and said
            if not handed:
                print("[bg] nothing to wait for" + (" (services run until cancelled)" if self._services() else ""))
            return None
        started = time.monotonic()
        try:
            if services:
                wait_ready(self.session.executor, services, timeout)
                tasks = sorted([*tasks, *(t for t in services if t.done())], key=lambda t: t.id)  # ended before ready
                self._answer_ready([t for t in services if not t.done()])
            for g in graphs:
                left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
                g.wait(left)
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            done = self.session.wait(tasks, timeout=left, return_when=mode) if tasks else []
            if keys in ([], ["all"]) or graphs:
                self.session.delivery.drain(at_boundary=True)
            self._answer(done)
            for g in graphs:
                self.session.drop_pending(g)
                if id(g) not in self.session.printed_now:
                    self.session.answer(g, text.graph_notice(g))
            self.session.settle_views([*done, *services, *(t for g in graphs for t in g.tasks.values())])
        except WaitTimeout as e:
            print(f"[bg] {e}; they go on (wait again, or %bg --cancel)")
        except KeyboardInterrupt:
            left = ", ".join(t.label for t in tasks if not t.done())
            print(f"[bg] wait interrupted after {time.monotonic() - started:.1f}s; still running: {left}")
        return None

    def _not_handed(self, task: Task) -> bool:
        """Whether ``task`` was dispatched here and its end is not handed over yet (it may still run)."""
        d = self.session.dispatches.get(task)
        return d is not None and not d.handed

    def _answer(self, done: list[Task]) -> None:
        """The wait's answer: one line per task it waited for, unless delivery just printed it; in dispatch order."""
        for t in sorted(done, key=lambda t: t.id):
            self.session.drop_pending(t)
            d = self.session.dispatches.get(t)
            if id(t) not in self.session.printed_now and not (d and d.graph):
                self.session.answer(t, text.notice(t, t.delivered, d.not_delivered if d else (),
                                                   d.facts() if d else NO_FACTS))

    def _answer_ready(self, services: list[Task]) -> None:
        """The wait's answer for services that are ready: their ready line, said once in this cell."""
        self.session.delivery.drain(at_boundary=True, only={t.id for t in services})
        for t in services:
            self.session.drop_pending(t)
            if id(t) not in self.session.printed_now:
                self.session.answer(t, text.ready_line(t))

    def _services(self) -> list[Any]:
        return [t for t in self.session.executor.active() if getattr(t.spec, "service", False)]

    def _dashboard(self) -> Any:
        if not self.session.display_dashboard():
            print(text.task_table(self.session.tasks(), self.session.dispatches.facts))  # as --list
        return None


__all__ = ["Actions"]
