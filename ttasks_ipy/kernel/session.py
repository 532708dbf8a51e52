"""The kernel side of one IPython session: the executor, the inbox, delivery, displays.

One ``Session`` per shell, created by ``%load_ext`` and shut down by unload or
at exit. It subscribes to the engine's events (terminal and READY events go to
the inbox), runs delivery at cell boundaries and when the kernel is idle, and
keeps each task's display so a result can update it in place.
"""
from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core import EventKind, Executor, Runner, Task, TaskEvent, TaskSpec, TaskState
from ..core.runners.python import CallRunner
from ..views import text
from ..views.notices import Notice, group_line
from .config import TTasks
from .delivery import Delivery, Inbox, Item
from .dispatch import Dispatch, Dispatches
from .displays import OwnDisplays

if TYPE_CHECKING:
    from ..core.runners.prompt import PromptSettings

log = logging.getLogger("ttasks_ipy")

#: settings the engine holds a copy of, pushed to it when changed (the others are read where they are used)
LIVE_SETTINGS = ("max_workers", "max_services", "queue_policy", "grace", "tail_chars", "file_cap")

#: seconds between two snapshots of the dashboards' saved forms
SNAPSHOT_EVERY = 1.0

_FINAL = (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED, EventKind.BLOCKED, EventKind.READY)


class Session:
    """Background tasks of one IPython shell.

    It is the ``syntax.runners.RunnerHooks`` of the magics: ``prompt_settings()``,
    ``worker_pool()`` and ``detached_runner(...)`` are what building a runner needs from it.
    """

    def __init__(self, shell: Any, config: TTasks) -> None:
        self.shell = shell
        self.config = config
        self.executor = Executor(
            max_workers=config.max_workers,
            max_services=config.max_services,
            queue_policy=config.queue_policy,
            grace=config.grace,
            tail_chars=config.tail_chars,
            file_cap=config.file_cap,
        )
        self.inbox = Inbox()
        #: what this session keeps about each task it started
        self.dispatches = Dispatches()
        self.delivery = Delivery(shell.user_ns, self.inbox, self._show, self.dispatches,
                                 overwrite=lambda: self.config.overwrite)
        #: each task's, graph's and dashboard's own displays, updated in place when they end
        self.displays = OwnDisplays(shell, lambda: self.delivery.cell_running)
        #: the display keys of dashboards, and when their saved forms were last replaced
        self._boards: list[tuple[str, int]] = []
        self._boards_at = -1e9
        self._boards_due = False
        #: counts cells run since load (execution_count does not move when history is off)
        self.cell_seq = 0
        #: notices of things delivered while idle with no display of their own, by id(task or graph)
        self._pending: dict[int, Notice] = {}
        #: the notices of the boundary being drained (said together in one line), else None
        self._batch: list[Notice] | None = None
        #: id() of the tasks and graphs whose notice was printed since the caller last cleared it (a wait's answer)
        self.printed_now: set[int] = set()
        #: the cell (``cell_seq``) in which each task's or graph's notice was last said, by id()
        self._said: dict[int, int] = {}
        self._pool: Any = None
        self._shown_in_cell: dict[int, int] = {}
        self._unsubscribe = self.executor.bus.subscribe(self._on_event, _FINAL)
        from .. import views

        #: the one updater of every live view of this session
        self.updater = views.Updater(self.executor.bus)
        #: tasks shown with a card by the dispatching magic, and with a start line (widgets off)
        self._cards: set[int] = set()
        #: the cards shown in the running cell that open no widget yet (they go live once it is answered)
        self._not_live: list[Any] = []
        self._cards_lock = threading.Lock()  # a card's going live and its end's display update, one at a time
        self._lines: set[int] = set()
        self.executor.add_wait_hook(self._after_wait)
        config.observe(self._on_config, names=list(LIVE_SETTINGS))
        from .dask_link import DaskLink

        #: where --dask tasks go (connected on first use)
        self.dask = DaskLink(self.executor, config)
        self._kernel = getattr(shell, "kernel", None)
        from .ledger import KernelLedger

        #: this session's ledger (history, results, detached commands)
        self.ledger = KernelLedger(self)
        atexit.register(self.shutdown)
        self._closed = False

    # ---- dispatch ------------------------------------------------------
    def submit(
        self,
        spec: TaskSpec,
        *,
        replace: bool = False,
        after: list[Task] | None = None,
        quiet: bool = False,
        show_handle: bool = False,
        dispatch: Dispatch | None = None,
        prepare: Any = None,
    ) -> Task:
        """Submit ``spec`` for this session and show its start line (unless ``quiet``).

        ``dispatch`` says where its result goes (default: the names a statement assigns);
        ``prepare(task)`` is called before the task can start.
        """
        d = dispatch or Dispatch()

        def adopt(t: Task) -> None:
            self.adopt(t, d)
            if prepare is not None:
                prepare(t)

        task = self.executor.submit(spec, replace=replace, after=after or (), prepare=adopt)
        d.queued_at_start = task.state is TaskState.QUEUED
        if quiet:
            if not show_handle:  # a bare `%bg --quiet …` line shows no handle either
                self._shown_in_cell[task.id] = self.cell_seq
        else:
            self.display_task(task)
        return task

    def submit_call(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Task:
        """The function form: ``bg(fn, *args, **kwargs)``."""
        spec = TaskSpec(CallRunner(fn, args, kwargs))
        # `bg(f)` as a cell's last line shows it
        return self.submit(spec, quiet=True, show_handle=True, dispatch=Dispatch(expression=True))

    def adopt(self, task: Task, dispatch: Dispatch) -> None:
        """Make ``task`` this session's: its events reach the inbox and ``dispatch`` says what to deliver."""
        self.dispatches.add(task, dispatch)

    def prompt_settings(self) -> PromptSettings:
        """LLM settings from the config, falling back to OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL."""
        from ..core.runners.prompt import PromptSettings

        c = self.config
        return PromptSettings.from_env(
            model=c.llm_model or None,
            base_url=c.llm_base_url or None,
            api_key_env=c.llm_api_key_env or "OPENAI_API_KEY",
            system=c.llm_system or None,
            temperature=c.llm_temperature,
            callable=c.llm_callable or None,
            max_concurrency=c.llm_max_concurrency,
            api_version=c.llm_api_version or None,
            extra_headers=dict(c.llm_extra_headers) or None,
            retries=c.llm_retries,
        )

    def worker_pool(self) -> Any:
        """The worker processes for ``--process`` tasks (started on first use, one per worker slot)."""
        if self._pool is None:
            from ..core.backends.process.backend import ProcessBackend
            from ..core.backends.process.pool import WorkerPool

            self._pool = WorkerPool(
                self.config.max_workers,
                grace=self.config.grace,
                reaper=self.executor.reaper,
                timers=self.executor.timers,
            )
            self.executor.add_backend(ProcessBackend(self._pool))
        return self._pool

    def detached_runner(self, command: str, env: dict[str, str], cwd: str | None) -> Runner:
        """The runner of ``%bg --detach !command``: the ledger's, so that a later kernel finds it again."""
        return self.ledger.detached_runner(command, env, cwd)

    def wait(self, tasks: list[Task], timeout: float | None = None, return_when: str = "all") -> list[Task]:
        """Wait for ``tasks`` (bounded); delivers what it waited for when on the main thread."""
        return self.executor.wait(tasks, timeout=timeout, return_when=return_when)

    # ---- displays ------------------------------------------------------
    def widgets(self) -> bool:
        """Whether live widgets are shown (a kernel with ipywidgets 8, and the setting on)."""
        from .. import views

        return bool(self.config.widgets) and views.widgets_available()

    def display_task(self, task: Task) -> None:
        """Show the task's own display in the current cell: a live card, or a line with a display id."""
        from IPython.display import display

        if self.widgets():
            self.display_card(task)
        else:
            line = _Line(text.start_line(task, self.dispatches.facts(task)))
            if self._kernel is None:  # a terminal cannot update a line in place: its notice says the end
                display(line)
            elif self.displays.show(task.id, line):
                self._lines.add(task.id)
        self._shown_in_cell[task.id] = self.cell_seq

    def display_card(self, task: Task, at_dispatch: bool = True) -> None:
        """Show a live card of ``task`` in the current cell (widgets on); its end replaces its saved form.

        ``at_dispatch``: shown by the dispatching magic (saved as its start until it ends); else a
        card of a task shown later (a finished task's card is saved as it ended).
        """
        from .. import views

        card = views.task_card(task, self.updater, facts=self.dispatches.facts(task), at_dispatch=at_dispatch,
                               live_later=True, ask_live=self._card_asks_live)
        self.displays.show(task.id, card)
        self._not_live.append(card)  # its widgets open at the cell's end, if its task still runs then
        if at_dispatch:
            self._cards.add(task.id)

    def settle_views(self, tasks: list[Task], timeout: float = 1.0) -> None:
        """Let the live views of ``tasks`` show their state now (bounded): a wait returns with its cards final.

        With nothing left running, every view (the dashboard too) is brought up to date. What a
        notebook run headless saves is then what ended, not a state a tenth of a second old.
        """
        if not self.widgets():
            return
        if self.executor.active():
            self.updater.wait_shown(tasks, timeout)
        else:
            self.updater.wait_idle(timeout)

    def display_graph(self, graph: Any, line: str) -> None:
        """Show a graph's own display: a live graph view, or its start line."""
        from IPython.display import display

        if self.widgets():
            from .. import views

            self.displays.show(("graph", id(graph)), views.graph_view(graph, self.updater))
        else:
            display(_Line(line))

    def display_dashboard(self) -> bool:
        """Show the live dashboard; False when widgets are not available (the caller prints text)."""
        if not self.widgets():
            return False
        from .. import views

        key = ("dashboard", len(self._boards))
        if self.displays.show(key, views.dashboard(self.executor, self.updater)):
            self._boards.append(key)
        return True

    def _snapshot_dashboards(self) -> None:
        """After tasks were delivered: replace each dashboard's saved form with the table as it is now.

        At most once a second (a table is rendered from every task); what ends within that second is
        in a last snapshot, taken on the kernel's loop when the second is over.
        """
        if not self._boards:
            return
        wait = self._boards_at + SNAPSHOT_EVERY - time.monotonic()
        if wait <= 0:
            self._boards_at = time.monotonic()
            for key in self._boards:
                self.displays.update(key, lambda board: board.mimebundle(snapshot=True), raw=True)
            return
        loop = getattr(self._kernel, "io_loop", None)
        if loop is not None and not self._boards_due:
            self._boards_due = True
            loop.call_later(wait, self._trailing_snapshot)

    def _trailing_snapshot(self) -> None:
        self._boards_due = False
        if not self._closed:
            self._snapshot_dashboards()

    def shown_in_this_cell(self, task: Task) -> bool:
        """Whether the dispatching magic already displayed ``task`` in the running cell."""
        tid = getattr(task, "id", None)
        return self.delivery.cell_running and tid is not None and self._shown_in_cell.get(tid) == self.cell_seq

    def track_graph(self, graph: Any) -> None:
        """Give a graph one notice each time a run of it (the first, every rerun) is done."""

        def done(g: Any) -> None:
            self.inbox.put(Item("graph", g))
            self._schedule_idle_drain()

        graph.add_run_listener(done)

    def _show(self, obj: Any, notice: Notice, at_boundary: bool) -> None:
        """Report one delivered thing: update its own display, and say its notice where it belongs."""
        tid = getattr(obj, "id", None)
        own = tid is not None and tid in self.displays
        if own:
            # the displays show the end, and a notebook saved from now on keeps it, also where no widget is drawn
            with self._cards_lock:
                self.displays.update(tid, lambda shown: _ended(shown, notice), raw=True)
        if tid in self._cards:
            self.updater.refresh(obj)  # the card shows the final state and what was delivered
            if at_boundary and not self.shown_in_this_cell(obj):
                self._say(obj, notice)
            return  # idle, or its card stands in this very cell: the card itself says it
        if ("graph", id(obj)) in self.displays:
            self.displays.update(("graph", id(obj)), lambda view: view.mimebundle(ended=True), raw=True)
        line = tid in self._lines
        if line and at_boundary and self.shown_in_this_cell(obj):
            return  # the display just updated stands in this very cell: no second line
        if at_boundary:
            self._say(obj, notice)
        elif not line and self.config.notices and not notice.silent:
            # idle, and no display of its own: printing now would land in whatever cell ran
            # last; the notice waits for the end of the next cell instead (a wait there answers it)
            self._pending[id(obj)] = notice

    def _say(self, obj: Any, notice: Notice) -> None:
        if not self.config.notices or notice.silent or self.said_in_this_cell(obj):
            return
        self.printed_now.add(id(obj))
        self._said[id(obj)] = self.cell_seq
        if self._batch is not None:
            self._batch.append(notice)  # said with the others at the end of this boundary
        else:
            print(notice.line)

    def _boundary(self) -> None:
        """Deliver what waits and say it all in at most one line (a cell's end, the terminal's prompt)."""
        self._batch = []
        try:
            if self.delivery.drain(at_boundary=True):
                self._snapshot_dashboards()
            pending, self._pending = self._pending, {}
            said = [*pending.values(), *self._batch]  # what ended while idle came first
        finally:
            self._batch = None
        line = group_line(said)
        if line is not None:
            print(line)
        self.ledger.say_warnings()

    # ---- events and delivery -------------------------------------------
    def _on_event(self, ev: TaskEvent) -> None:
        if ev.task not in self.dispatches:
            return
        if ev.kind is EventKind.READY:
            self.inbox.put(Item("ready", ev.task))
        else:
            self.inbox.put(Item("final", ev.task))
        self._schedule_idle_drain()

    def _schedule_idle_drain(self) -> None:
        kernel = self._kernel
        if kernel is not None:
            loop = getattr(kernel, "io_loop", None)
            if loop is not None:
                try:
                    loop.add_callback(self._idle_drain)
                except RuntimeError:
                    pass
            return
        app = getattr(getattr(self.shell, "pt_app", None), "app", None)
        if app is not None and getattr(app, "is_running", False) and app.loop is not None:
            app.loop.call_soon_threadsafe(self._terminal_drain)

    def _idle_drain(self) -> None:
        if self.delivery.cell_running or self._closed:
            return
        if self.delivery.drain(at_boundary=False):
            self._snapshot_dashboards()

    def _terminal_drain(self) -> None:
        if self.delivery.cell_running or self._closed:
            return
        try:
            # on the prompt's loop (the main thread); while the prompt waits, stdout is
            # prompt_toolkit's proxy, which prints above the prompt and redraws it
            self._boundary()
        except Exception:
            log.debug("terminal delivery failed", exc_info=True)

    def pre_run_cell(self, *_: Any) -> None:
        if self._kernel is None and not self._closed:
            # terminal IPython: what ended while the prompt waited is delivered before the
            # line typed runs (the prompt's own delivery may not have had its turn yet)
            self._boundary()
        self.cell_seq += 1
        self._said.clear()  # only the running cell's are asked about
        self.delivery.cell_running = True

    def post_run_cell(self, *_: Any) -> None:
        try:
            self._boundary()
        finally:
            self.delivery.cell_running = False
            cards, self._not_live = self._not_live, []
            if cards:
                self._when_idle(lambda: self._go_live(cards))

    def _when_idle(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the main thread once the running request is answered (at once without a kernel)."""
        loop = getattr(self._kernel, "io_loop", None)
        if loop is not None:
            try:
                loop.add_callback(fn)
                return
            except RuntimeError:
                pass
        fn()

    def _go_live(self, cards: list[Any]) -> None:
        """The cards of a cell that ended open their widgets, where their task still runs.

        Done once the cell is answered: a task that ended by then never needs them (its end replaces
        its card), and a Cancel click is handled only once the kernel is free anyway.
        """
        if self._closed:
            return
        for card in cards:
            self._open_card(card)

    def _card_asks_live(self, card: Any) -> None:
        """From the updater's thread: a card's task has run a while in a cell that still runs; open it now."""
        if self.delivery.cell_running and not self._closed:
            self._open_card(card)

    def _open_card(self, card: Any) -> None:
        """Open ``card``'s widgets if its task still runs, and show it again as them.

        Under the lock that delivery's end update takes too: whichever comes second shows last, and an
        end never comes before the live view it replaces.
        """
        with self._cards_lock:
            task = card.task
            if card.go_live() and task is not None:
                self.displays.update(task.id, lambda shown: shown.mimebundle(ended=False), raw=True)

    def answer(self, obj: Any, line: str) -> None:
        """Print a wait's answer about ``obj`` (its notice), noting that this cell said it."""
        print(line)
        self.note_said(obj)

    def note_said(self, obj: Any) -> None:
        """Note that the running cell showed the notice of ``obj`` (its end does not repeat it)."""
        self._said[id(obj)] = self.cell_seq

    def said_in_this_cell(self, obj: Any) -> bool:
        """Whether the running cell already printed the notice of ``obj`` (its handle need not repeat it)."""
        return self.delivery.cell_running and self._said.get(id(obj)) == self.cell_seq

    def drop_pending(self, obj: Any) -> None:
        """Forget the waiting notice of ``obj`` (a wait in this cell has answered for it)."""
        self._pending.pop(id(obj), None)

    def _after_wait(self, done: list[Task]) -> None:
        if threading.current_thread() is threading.main_thread():
            ids = {t.id for t in done if t in self.dispatches}
            if ids:
                if self.delivery.drain(at_boundary=True, only=ids):
                    self._snapshot_dashboards()

    def _on_config(self, change: dict[str, Any]) -> None:
        name, value = change["name"], change["new"]
        if name == "max_workers":
            self.executor.set_max_workers(value)
            if self._pool is not None:
                self._pool.resize(value)
        elif name == "grace":
            self.executor.grace = value  # the reaper's too
            if self._pool is not None:
                self._pool.grace = value
        else:
            setattr(self.executor, name, value)

    # ---- lookup --------------------------------------------------------
    def find(self, key: str) -> Task | None:
        """A task by id (``3``, ``#3``) or name."""
        return self.executor.get(key)

    def tasks(self) -> list[Task]:
        """Every task of the session, oldest first."""
        return self.executor.tasks()

    # ---- ending --------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel everything and end every process tree; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            atexit.unregister(self.shutdown)
        except Exception:
            pass
        self._unsubscribe()
        self.executor.remove_wait_hook(self._after_wait)
        self.ledger.release_detached()  # they outlive the kernel: the next one finds them again
        self.executor.cancel_all("kernel shutdown")
        self.updater.close()
        if self._pool is not None:
            self._pool.shutdown()
        self.executor.shutdown()
        self.dask.shutdown()
        self.ledger.close()
        if "ttasks_ipy.core.runners.prompt" in sys.modules:
            from ..core.runners.prompt import shutdown_loop

            shutdown_loop()


def _ended(shown: Any, notice: Notice) -> dict[str, Any]:
    """What replaces a task's display when it has ended: a card's end, or a start line's notice."""
    if isinstance(shown, _Line):
        return {"text/plain": notice.line}
    return shown.mimebundle(ended=True)


class _Line:
    """A display object whose text/plain is one line."""

    def __init__(self, line: str) -> None:
        self.line = line

    def __repr__(self) -> str:
        return self.line

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.line)


__all__ = ["Session", "TaskState"]
