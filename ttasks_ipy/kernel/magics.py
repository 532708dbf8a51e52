"""``%bg``: parse the user's words, call the engine, render. Bodies of the magics stay short.

Grammar: ``%bg [OPTIONS] [--] BODY``. Only leading ``-...`` tokens are options
(``--`` ends them); BODY is the rest of the line exactly as typed: ``!cmd`` is
bash, ``?text`` a prompt, anything else Python. Actions (``--list``,
``--cancel``, ``--wait``, ``--log``, ``--dashboard``) take names instead of a
body and refuse dispatch options.
"""
from __future__ import annotations

import argparse
import shlex
from typing import Any, cast

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, kwds, magic_arguments

from ..core import SpecError, TaskSpec, compile_body
from ..core.errors import QueueFull, TaskError
from ..syntax import numbers
from ..syntax.comments import strip_comment
from ..syntax.expand import expand_shell, expand_text, split_options
from ..syntax.runners import BodyKind, Place, command_cwd, command_env, make_runner
from ..views import text
from .actions import Actions
from .dispatch import Dispatch
from .session import Session

ACTIONS = ("--list", "--cancel", "--wait", "--log", "--dashboard", "--history", "--load", "--forget", "--rerun")
RESERVED = ("all", "any")


def _seconds(label: str, *, allow_zero: bool = False) -> Any:
    return numbers.arg_type(lambda s: numbers.seconds(label, s, allow_zero=allow_zero))


def _count(label: str, *, low: int = 0) -> Any:
    return numbers.arg_type(lambda s: numbers.count(label, s, low=low))


#: the options of ``%bg`` and ``%%bg``: (flags, argparse keywords); the help text is made from this list
DISPATCH_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-n", "--name"), {"metavar": "NAME", "help": "name the task (an identifier); unique among active tasks"}),
    (("-o", "--out"), {"metavar": "VAR",
                       "help": "deliver the expression's value (or a command's result) into VAR"}),
    (("--timeout",), {"type": _seconds("--timeout"), "metavar": "S", "help": "fail the task after S seconds"}),
    (("--retries",), {"type": _count("--retries"), "default": 0, "metavar": "N",
                      "help": "run again up to N times after failing"}),
    (("--backoff",), {"type": _seconds("--backoff", allow_zero=True), "default": 1.0, "metavar": "S",
                      "help": "seconds before the first retry (doubles)"}),
    (("--stall",), {"type": _seconds("--stall"), "metavar": "S",
                    "help": "mark the task stalled after S seconds without output"}),
    (("--service",), {"action": "store_true", "help": "a long-running command: own limit, no stall detection"}),
    (("--ready",), {"metavar": "PATTERN", "help": "with --service: regex of the output line that means ready"}),
    (("--env",), {"action": "append", "default": [], "metavar": "NAME=expr",
                  "help": "environment variable for a command (repeatable)"}),
    (("--cwd",), {"metavar": "DIR", "help": "working directory for a command"}),
    (("--after",), {"metavar": "NAMES", "help": "wait for these tasks (comma-separated) to succeed first"}),
    (("--replace",), {"action": "store_true", "help": "cancel an active task of the same name"}),
    (("--quiet",), {"action": "store_true", "help": "show nothing when dispatching"}),
    (("--process",), {"action": "store_true", "help": "run Python in a worker process"}),
    (("--dask",), {"action": "store_true", "help": "run Python or a command on a Dask cluster (TTasks.dask_address)"}),
    (("--local",), {"action": "store_true", "help": "run here (a thread of the kernel), whatever TTasks.backend says"}),
    (("--prompt",), {"action": "store_true", "help": "the body is an LLM prompt"}),
    (("--model",), {"metavar": "MODEL", "help": "model for a prompt"}),
    (("--system",), {"metavar": "TEXT", "help": "system prompt for a prompt"}),
    (("--bash",), {"action": "store_true", "help": "(%%bg) the cell is a bash script"}),
    (("--names",), {"metavar": "NAMES", "help": "(%%bg) deliver only these names (comma-separated)"}),
    (("--detach",), {"action": "store_true",
                     "help": "a command that outlives the kernel (a restarted kernel follows it again)"}),
]
#: option -> whether it takes a value (for splitting the leading options off a line)
TAKES_VALUE = {flag: kw.get("action") != "store_true" for flags, kw in DISPATCH_OPTIONS for flag in flags}


def dispatch_options(fn: Any) -> Any:
    """The option set shared by ``%bg``, ``%%bg`` (one decorator, STYLE 8)."""
    decorators = [kwds(add_help=False)] + [argument(*flags, **kw) for flags, kw in DISPATCH_OPTIONS]
    for d in reversed(decorators):
        fn = d(fn)
    fn = magic_arguments()(fn)
    fn.parser.allow_abbrev = False  # no abbreviations: --time is not --timeout
    return fn


#: the actions of ``%bg``: (flag, what follows it, argparse keywords, help)
ACTION_OPTIONS: list[tuple[str, str, dict[str, Any], str]] = [
    ("--list", "", {"action": "store_true"}, "id, name, kind, status, elapsed and reason of every task"),
    ("--cancel", "NAME|ID ... | all", {"nargs": "*"},
     "cancel at once (a command's whole process tree: SIGTERM, grace, SIGKILL)"),
    ("--wait", "[NAME|ID ... | all | any]", {"nargs": "*"},
     "wait (bounded by --timeout S) and say how each ended (a service with --ready: until it is ready); "
     "no names: every active task but services"),
    ("--log", "NAME", {"nargs": 1}, "the task's output and traceback (a past task's from the ledger)"),
    ("--dashboard", "", {"action": "store_true"}, "one live table of every task"),
    ("--history", "[N]", {"nargs": "?", "const": 20, "type": _count("--history", low=1)},
     "the last N (20) tasks of this notebook's kernels, newest first, from the ledger"),
    ("--load", "NAME|ID", {"nargs": 1}, "bring a past task's kept result back (a graph's: all its names)"),
    ("--forget", "NAME|ID ...", {"nargs": "*"}, "remove past tasks and their output files from the ledger"),
    ("--rerun", "GRAPH", {"nargs": 1}, "run a graph again, keeping what succeeded (after a restart: from the ledger)"),
]
#: options that go with an action: (flag, argparse keywords, help)
ACTION_MODIFIERS: list[tuple[str, dict[str, Any], str]] = [
    ("--timeout", {"type": _seconds("--timeout"), "metavar": "S"}, "with --wait: give up waiting after S seconds"),
    ("--tail", {"type": _count("--tail", low=1), "metavar": "N"},
     f"with --log: show the last N lines of each stream (default {text.LOG_TAIL})"),
    ("--all", {"action": "store_true"}, "with --log: show the whole output"),
    ("--all-kernels", {"action": "store_true"}, "with --history: the tasks of every notebook"),
    ("-o", {"dest": "out", "metavar": "VAR"}, "with --load: into VAR"),
    ("--older-than", {"metavar": "AGE"}, "with --forget: every finished task older than AGE (30d, 12h, 90m)"),
]


def _action_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%bg", allow_abbrev=False, add_help=False)
    g = p.add_mutually_exclusive_group(required=True)
    for flag, _, kw, _help in ACTION_OPTIONS:
        g.add_argument(flag, **kw)
    for flag, kw, _help in ACTION_MODIFIERS:
        p.add_argument(flag, **kw)
    return p


def help_text() -> str:
    """What ``%bg?`` shows: the grammar, then every option and action (made from the tables above)."""

    def rows(items: list[tuple[str, str]]) -> list[str]:
        width = max(len(left) for left, _ in items)
        return [f"  {left.ljust(width)}  {right}" for left, right in items]

    options = []
    for flags, kw in DISPATCH_OPTIONS:
        value = "" if kw.get("action") == "store_true" else f" {kw.get('metavar', flags[-1].lstrip('-').upper())}"
        options.append((", ".join(flags) + value, kw["help"]))
    actions = [(f"{flag} {after}".rstrip(), h) for flag, after, _, h in ACTION_OPTIONS]
    actions += [(f"{flag} {kw.get('metavar', '')}".rstrip(), h) for flag, kw, h in ACTION_MODIFIERS]
    return "\n".join([
        "Run a bash command, a Python statement or an LLM prompt in the background.",
        "",
        "  %bg [OPTIONS] [--] BODY     returns the task's handle at once (h = %bg ...)",
        "  %%bg [OPTIONS]              the whole cell runs in the background",
        "",
        "BODY is the rest of the line exactly as typed: !COMMAND is bash, ?TEXT an LLM prompt,",
        "anything else Python. Only the leading -... tokens are options; -- ends them.",
        "The result arrives in the namespace at the next idle moment, with a one-line notice.",
        "",
        "Options:",
        *rows(options),
        "",
        "Actions (alone on the line, with names instead of a body; a trailing # starts a comment):",
        *rows(actions),
    ]) + "\n"


#: options that may be given more than once
REPEATABLE = frozenset(flag for flags, kw in DISPATCH_OPTIONS if kw.get("action") == "append" for flag in flags)


def _refuse_repeats(tokens: list[str], magic: str) -> None:
    """One ``UsageError`` when an option appears twice among ``tokens`` (argparse keeps the last one silently)."""
    aliases = {flag: flags[-1] for flags, _ in DISPATCH_OPTIONS for flag in flags}
    seen: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, eq, value = token.partition("=")
        takes = TAKES_VALUE.get(flag) or flag in ("--timeout", "--tail")
        if takes and not eq and i + 1 < len(tokens):
            i += 1
            value = tokens[i]
        i += 1
        if not flag.startswith("-") or flag in REPEATABLE:
            continue
        key = aliases.get(flag, flag)
        if key in seen:
            both = f" ({seen[key]} and {value})" if takes else ""
            raise UsageError(f"{magic}: {flag} is given twice{both}: give it once")
        seen[key] = value


def _refuse_misplaced(args: argparse.Namespace, kind: str) -> None:
    """One ``UsageError`` for an option that does nothing for a task of ``kind`` ('bash', 'python', 'prompt')."""
    if args.detach and kind != "bash":
        raise UsageError("%bg: --detach goes with a command (!COMMAND or %%bg --bash), which can outlive the kernel")
    if args.process and kind == "bash":
        raise UsageError("%bg: --process goes with Python (a command already runs in its own process): drop it")
    for opt, value in (("--model", args.model), ("--system", args.system)):
        if value is not None and kind != "prompt":
            what = {"bash": "a command", "python": "Python"}.get(kind, kind)
            raise UsageError(f"%bg: {opt} goes with a prompt (?TEXT, --prompt or %%bg --prompt), not with {what}")
    if args.service and args.stall is not None:
        raise UsageError("%bg: a service has no stall detection (it may be quiet for hours): drop --stall or --service")
    if args.after is not None and not [k for k in args.after.split(",") if k.strip()]:
        raise UsageError("%bg: --after needs task names (--after NAME[,NAME]); drop it to start at once")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"%bg: {numbers.argparse_message(message)}")


@magics_class
class BgMagics(Magics):
    """The ``%bg`` and ``%%bg`` magics."""

    def __init__(self, shell: Any, session: Session) -> None:
        super().__init__(shell)
        self.session = session
        self._actions = _action_parser()
        self._act = Actions(shell, session)

    @no_var_expand
    @dispatch_options
    @line_cell_magic
    def bg(self, line: str, cell: str | None = None) -> Any:
        """Replaced by ``help_text()`` below (what ``%bg?`` shows)."""
        try:
            if cell is None and line.strip().split(None, 1)[:1] and line.split()[0] in ACTIONS:
                return self._action(strip_comment(line))
            if cell is not None:
                line = strip_comment(line)  # the first line takes options only: a trailing # is a comment
            _refuse_repeats(split_options(line, TAKES_VALUE.get)[0], "%%bg" if cell is not None else "%bg")
            return self._dispatch(line, cell)
        except UsageError:
            raise
        except TaskError as e:
            raise UsageError(f"%bg: {e}") from None

    # ---- dispatch ------------------------------------------------------
    def _dispatch(self, line: str, cell: str | None) -> Any:
        parser = self.bg.parser
        tokens, body = split_options(line, TAKES_VALUE.get)
        for t in tokens:
            if t.split("=", 1)[0] in ACTIONS:
                raise UsageError(f"%bg: {t} is an action: use it alone, without dispatch options or a body")
        try:
            args = parser.parse_args(tokens)
        except UsageError as e:
            msg = numbers.argparse_message(str(e))
            if msg.startswith("unrecognized arguments:"):
                msg = f"unknown option {msg.split(':', 1)[1].strip()} (see %bg? for the options; -- ends them)"
            raise UsageError(f"%bg: {msg}") from None
        ns = self.shell.user_ns
        if cell is not None:
            if body:
                raise UsageError(f"%%bg: the first line takes options only; found {body!r} (put code in the cell)")
            return self._dispatch_cell(args, cell)
        if not body:
            raise UsageError("%bg: nothing to run: give a body (!command, a Python statement, or ?prompt)")
        if args.bash or args.names:
            raise UsageError("%bg: --bash and --names go with %%bg (the cell magic)")
        name, out = self._names(args, ns)
        if body.startswith("!") and not args.prompt:
            command = body[1:].strip()
            if not command:
                raise UsageError("%bg: empty command after '!'")
            spec = self._command_spec(args, expand_shell(command, ns), name)
            plan = Dispatch(out=out, keeps_failed_result=True).remember_targets([out] if out else [], ns)
        elif body.startswith("?") or args.prompt:
            text_ = body[1:] if body.startswith("?") and not args.prompt else body
            spec, plan = self._prompt_spec(args, text_, name, out)
        else:
            self._refuse_command_options(args)
            pybody = compile_body(body, self._filename())
            if out and not pybody.is_expression:
                raise UsageError(
                    f"%bg: -o {out} takes the value of an expression, but the body is a statement: "
                    "drop -o (assigned names are delivered) or give an expression"
                )
            spec = self._spec(args, "python", pybody, name)
            targets = [out] if out else ([] if pybody.is_expression else list(pybody.assigns))
            plan = Dispatch(out=out, expression=pybody.is_expression).remember_targets(targets, ns)
        return self._submit(spec, args, plan)

    def _dispatch_cell(self, args: argparse.Namespace, cell: str) -> Any:
        ns = self.shell.user_ns
        name, out = self._names(args, ns)
        if not cell.strip():
            raise UsageError("%%bg: the cell is empty: put the code to run below the %%bg line")
        if args.bash:
            if args.names:
                raise UsageError("%%bg --bash: --names goes with Python cells; a script delivers its result with -o")
            spec = self._command_spec(args, cell, name)
            plan = Dispatch(out=out, keeps_failed_result=True).remember_targets([out] if out else [], ns)
        elif args.prompt:
            if args.names:
                raise UsageError("%%bg --prompt: --names goes with Python cells; a prompt delivers its text with -o")
            spec, plan = self._prompt_spec(args, cell, name, out)
        else:
            self._refuse_command_options(args)
            # line 1 of the cell is the %%bg line: tracebacks count from there
            pybody = compile_body(cell, self._filename(), first_line=2)
            if out and not pybody.is_expression:
                raise UsageError(
                    f"%%bg: -o {out} takes the value of an expression, but the cell has statements: "
                    "drop -o (assigned names are delivered, or only those given with --names)"
                )
            names = None
            if args.names:
                names = [n.strip() for n in expand_text(args.names, ns).split(",") if n.strip()]
                for n in names:
                    if not n.isidentifier():
                        raise UsageError(f"%%bg: --names {n!r}: give Python names separated by commas")
                    if n not in pybody.assigns:
                        raise UsageError(
                            f"%%bg: --names {n}: the cell never assigns {n} "
                            f"(it assigns: {', '.join(pybody.assigns) or 'nothing'})"
                        )
            spec = self._spec(args, "python", pybody, name)
            targets = [out] if out else ([] if pybody.is_expression else list(names or pybody.assigns))
            plan = Dispatch(out=out, expression=pybody.is_expression, names=None if names is None else tuple(names))
            plan.remember_targets(targets, ns)
        task = self._submit(spec, args, plan)
        if name:
            ns[name] = task  # a cell magic's value cannot be assigned: bind the handle under its name
        return task

    def _prompt_spec(
        self, args: argparse.Namespace, template: str, name: str | None, out: str | None
    ) -> tuple[TaskSpec, Dispatch]:
        self._refuse_command_options(args)
        if args.process:
            raise UsageError("%bg: --process goes with Python, not with a prompt")
        ns = self.shell.user_ns
        prompt = expand_text(template, ns, dollar=False).strip()
        if not prompt:
            raise UsageError("%bg: the prompt is empty: write the question after '?'")
        spec = self._spec(args, "prompt", prompt, name)
        if spec.timeout is None:
            spec.timeout = self.session.config.llm_timeout
        plan = Dispatch(out=out, expression=True, keeps_failed_result=True).remember_targets([out] if out else [], ns)
        return spec, plan

    def _command_spec(self, args: argparse.Namespace, command: str, name: str | None) -> TaskSpec:
        """A command's spec: in the kernel's care, or detached (``--detach``) to outlive it."""
        if args.detach:
            for opt, given in (("--service", args.service), ("--ready", args.ready), ("--stall", args.stall),
                               ("--retries", args.retries)):
                if given:
                    raise UsageError(f"%bg: {opt} does not go with --detach (a detached command runs once, on its own)")
        ns = self.shell.user_ns
        return self._spec(args, "bash", command, name, env=command_env(args.env, ns), cwd=command_cwd(args.cwd, ns))

    def _spec(self, args: argparse.Namespace, kind: BodyKind, body: Any, name: str | None, *,
              env: dict[str, str] | None = None, cwd: str | None = None) -> TaskSpec:
        """Check the options for a body of ``kind``, build its runner where it runs, and its spec."""
        if args.ready and not args.service:
            raise UsageError("%bg: --ready goes with --service")
        _refuse_misplaced(args, kind)
        if args.detach:  # it is found again by its pid on this machine: whatever TTasks.backend says, it runs here
            for opt, given in (("--dask", args.dask), ("--process", args.process)):
                if given:
                    raise UsageError(f"%bg: {opt} does not go with --detach (a detached command runs on this "
                                     "machine, where a later kernel finds it by its pid)")
            backend = "thread"
        else:
            backend = self._backend(args, kind)
        place = cast(Place, "detached" if args.detach else backend)
        runner = make_runner(kind, body, place, hooks=self.session, namespace=self.shell.user_ns,
                             env=env, cwd=cwd, model=args.model, system=args.system)
        if backend == "dask":
            self.session.dask.ensure("%bg")
        return TaskSpec(
            runner,
            name=name,
            timeout=args.timeout,
            retries=args.retries,
            backoff=args.backoff,
            stall=args.stall,
            service=args.service,
            ready=expand_text(args.ready, self.shell.user_ns) if args.ready else None,
            backend=backend,
        )

    def _backend(self, args: argparse.Namespace, kind: str) -> str:
        """Where a task of ``kind`` runs: the options, else ``TTasks.backend``."""
        return self.session.dask.choose("%bg", kind, dask=args.dask, local=args.local, process=args.process,
                                        service=args.service)

    def _submit(self, spec: TaskSpec, args: argparse.Namespace, plan: Dispatch) -> Any:
        after = []
        if args.after:
            for key in expand_text(args.after, self.shell.user_ns).split(","):
                after.append(self._act.find(key.strip()))
        plan.quiet = bool(args.quiet)
        old = self.session.find(spec.name) if spec.name and not args.replace else None
        if old is not None and not old.state.terminal:
            raise UsageError(f"%bg: a task named {spec.name!r} is {old.status}: choose another name, "
                             "or add --replace to cancel it and start this one")
        try:
            return self.session.submit(spec, replace=args.replace, after=after, quiet=args.quiet, dispatch=plan)
        except QueueFull as e:
            raise UsageError(f"%bg: {e}") from None

    def _names(self, args: argparse.Namespace, ns: dict[str, Any]) -> tuple[str | None, str | None]:
        name = expand_text(args.name, ns) if args.name else None
        out = expand_text(args.out, ns) if args.out else None
        if name is not None and (not name.isidentifier() or name in RESERVED):
            raise UsageError(f"%bg: -n {name!r}: a task name must be an identifier other than all/any")
        if out is not None and not out.isidentifier():
            raise UsageError(f"%bg: -o {out!r}: the target must be a Python name")
        return name, out

    @staticmethod
    def _refuse_command_options(args: argparse.Namespace) -> None:
        for opt, v in (("--env", args.env), ("--cwd", args.cwd), ("--service", args.service), ("--ready", args.ready)):
            if v:
                raise UsageError(f"%bg: {opt} goes with a command (!...), not with Python")

    def _filename(self) -> str:
        self._counter = getattr(self, "_counter", 0) + 1
        return f"<bg-{self._counter}>"

    # ---- actions -------------------------------------------------------
    def _action(self, line: str) -> Any:
        try:
            tokens = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%bg: {e}") from None
        _refuse_repeats(tokens, "%bg")
        try:
            a = self._actions.parse_args(tokens)
        except UsageError as e:
            msg = str(e)
            if "unrecognized arguments" in msg:
                extra = msg.split("unrecognized arguments:", 1)[1].strip()
                raise UsageError(
                    f"%bg: {extra} does not go with {tokens[0]} (actions take no dispatch options)"
                ) from None
            raise
        if (a.tail is not None or a.all) and not a.log:
            raise UsageError(f"%bg: {'--tail' if a.tail is not None else '--all'} goes with --log NAME")
        if a.timeout is not None and a.wait is None:
            raise UsageError("%bg: --timeout with an action goes with --wait NAMES")
        for flag, given, goes in (("--all-kernels", a.all_kernels, a.history), ("-o", a.out, a.load),
                                  ("--older-than", a.older_than, a.forget)):
            if given and goes is None:
                action = {"--all-kernels": "--history", "-o": "--load NAME", "--older-than": "--forget"}[flag]
                raise UsageError(f"%bg: {flag} goes with {action}")
        return self._act.run(a)


BgMagics.bg.__doc__ = help_text()

__all__ = ["ACTION_OPTIONS", "DISPATCH_OPTIONS", "BgMagics", "SpecError", "help_text"]
