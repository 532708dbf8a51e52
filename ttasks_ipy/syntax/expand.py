"""The user's words: split a ``%bg`` line into options and body; the one ``{expr}``/``$name`` expander.

``split_options`` walks the leading ``-...`` tokens only (``--`` ends them) and
keeps the rest of the line exactly as typed.

Fields are found by ``template.Template`` and evaluated by its rules (a field
that is not Python, or reads none of your names, stays as written). Three
renderings:

* ``expand_shell(command, ns)``: a bash command. ``{expr}`` and ``$name``
  that evaluate are quoted for the exact place they stand in bash's grammar
  (``shellgrammar``), or refused with a one-line ``SpecError`` where no value
  can be made safe. What does not evaluate belongs to the shell and is passed
  untouched: ``$HOME``, ``${x}``, ``$1``, ``$?``, ``{a,b}``, ``{ cmd; }``,
  awk and jq programs. A ``$name`` stays the shell's also inside ``'…'`` (as in
  IPython), in a comment, and when the command sets ``name`` itself
  (``for i in …``, ``i=…``, ``read i``). A list is several words where bash
  splits words, joined with spaces inside quotes, refused elsewhere.
* ``expand_text(text, ns)``: option values, no quoting. A field that reads a
  name that is not defined is an error (nothing else would read the text);
  one that is not Python (``\\d{3}``) stays as written.
* ``expand_text(text, ns, dollar=False)``: prompts, no quoting, ``$`` is plain
  text; a field that is not Python or reads no defined name stays as written
  (a JSON example ``{"k": 1}``, ``{placeholder}``).

``bind_prompt(text, ns)`` returns a prompt template bound to a namespace, for
the engine to fill in when the task starts (``core.fields.Template``).
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from ..core.errors import SpecError
from .shellgrammar import Place, ShellLexer, Unclosed, Unquotable, quote_at
from .template import KEEP, Field, Piece, Template, evaluate

__all__ = ["BoundPrompt", "Template", "bind_prompt", "expand_shell", "expand_text", "split_options"]

_BOUNDARY = frozenset(" \t\n;&|()<>")


# ---- options -------------------------------------------------------------------
def _word_end(line: str, i: int) -> int:
    """Index just after the shell word starting at ``i`` (quotes respected)."""
    n = len(line)
    quote = None
    while i < n:
        c = line[i]
        if quote:
            if c == "\\" and quote == '"' and i + 1 < n:
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "\\" and i + 1 < n:
            i += 2
            continue
        elif c.isspace():
            break
        i += 1
    if quote:
        raise SpecError(f"unclosed {quote} quote in the options")
    return i


def split_options(line: str, takes_value: Callable[[str], bool | None]) -> tuple[list[str], str]:
    """Split ``line`` into option tokens and the body as typed.

    ``takes_value(opt)`` says whether option ``opt`` takes a value (True), is a
    flag (False) or is unknown (None: left for the parser to reject).
    """
    tokens: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n or line[i] != "-":
            break
        end = _word_end(line, i)
        word = line[i:end]
        if word == "--":
            i = end
            while i < n and line[i].isspace():
                i += 1
            return tokens, line[i:].rstrip("\n")
        if word == "-":
            break
        try:
            (tok,) = shlex.split(word)
        except ValueError as e:
            raise SpecError(f"cannot read option {word!r}: {e}") from None
        tokens.append(tok)
        i = end
        opt = tok.split("=", 1)[0]
        if "=" not in tok and takes_value(opt):
            while i < n and line[i].isspace():
                i += 1
            if i >= n:
                break
            end = _word_end(line, i)
            tokens.append(shlex.split(line[i:end])[0] if line[i:end] else "")
            i = end
    return tokens, line[i:].rstrip("\n").strip()


# ---- text ----------------------------------------------------------------------
def _render_text(pieces: tuple[Piece, ...], namespace: Mapping[str, Any], strict: bool, out: list[str]) -> None:
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
            continue
        value = evaluate(p, namespace, strict=strict)
        if value is not KEEP:
            out.append(str(value))
        elif p.dollar:
            out.append(p.text)
        else:
            out.append("{")
            _render_text(p.inner, namespace, strict, out)
            out.append("}")


def expand_text(text: str, namespace: Mapping[str, Any], *, dollar: bool = True) -> str:
    """``text`` with its fields replaced by ``str()`` of their values, no quoting.

    With ``dollar`` (option values) ``$name`` is a field too, and a field that
    reads an undefined name raises ``SpecError``; without it (prompts) ``$`` is
    plain text and such a field stays as written.
    """
    out: list[str] = []
    _render_text(Template(text, dollar=dollar).pieces, namespace, dollar, out)
    return "".join(out)


class BoundPrompt:
    """A prompt template and the namespace it reads: ``render()`` fills it in (the core's ``Template``)."""

    def __init__(self, template: Template, namespace: Mapping[str, Any]) -> None:
        self.template = template
        self.namespace = namespace

    @property
    def source(self) -> str:
        """The text as written."""
        return self.template.source

    def render(self) -> str:
        """The text with its fields filled in now (prompt rules: no quoting, ``$`` is plain text)."""
        out: list[str] = []
        _render_text(self.template.pieces, self.namespace, False, out)
        return "".join(out)

    def __repr__(self) -> str:
        return f"BoundPrompt({self.source!r})"


def bind_prompt(text: str | Template, namespace: Mapping[str, Any]) -> BoundPrompt:
    """``text`` as a prompt template bound to ``namespace``, filled in when ``render()`` is called."""
    return BoundPrompt(text if isinstance(text, Template) else Template(text, dollar=False), namespace)


# ---- commands --------------------------------------------------------------------
def _env_name(field: Field) -> tuple[str, str]:
    """A variable name and an ``--env`` value that pass ``field`` through the environment."""
    expr = field.source.strip()
    name = expr.upper() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", expr) else "V"
    item = f"{name}={expr}"
    return name, (f'"{item}"' if re.search(r"[\s\"'$`\\;&|<>()]", item) else item)


def _refusal(field: Field, e: Unquotable, value: Any) -> SpecError:
    label = field.label
    name, env = _env_name(field)
    if e.hint == "int":
        return SpecError(f"{label} stands {e.reason}, where bash evaluates text as arithmetic: only a Python int "
                         f"can stand there, not a {type(value).__name__} (convert it, e.g. {{int(...)}})")
    if e.hint == "list":
        return SpecError(f"{label} is {e.reason}: give it a word of its own, or join it into one "
                         f"(e.g. {{' '.join(...)}})")
    if e.hint == "nul":
        return SpecError(f"{label} holds a NUL character, which no bash word can hold")
    if e.hint == "escape":
        return SpecError(f"{label} stands right after a backslash: remove the backslash, or write \\\\ for a "
                         "literal one")
    if e.hint == "name":
        return SpecError(f"{label} stands {e.reason}: a value there can run code; write the name itself")
    if e.hint == "code":
        return SpecError(f"{label} stands {e.reason}: pass it with --env {env} and write \"${name}\" inside the code")
    ref = f"${name}" if "here-document" in e.reason else f'"${name}"'
    return SpecError(f"{label} stands {e.reason}, where a value cannot be quoted: pass it with --env {env} "
                     f"and write {ref} there")


def _shell_names(template: Template) -> set[str]:
    """The variables the command sets itself, read from the whole text (fields as written)."""
    lex = ShellLexer()

    def feed(pieces: tuple[Piece, ...]) -> None:
        for p in pieces:
            if isinstance(p, str):
                lex.feed(p)
            elif p.dollar:
                lex.feed(p.text)
            else:
                lex.feed("{")
                feed(p.inner)
                lex.feed("}")

    try:
        feed(template.pieces)
        lex.end()
    except (Unclosed, Unquotable):
        pass
    return lex.names


class _ShellRender:
    """One rendering of a command template against a namespace."""

    def __init__(self, template: Template, namespace: Mapping[str, Any]) -> None:
        self.namespace = namespace
        self.shell_names = _shell_names(template)
        self.lex = ShellLexer()
        self.out: list[str] = []
        self.marked: dict[int, tuple[Field, Any]] = {}

    def literal(self, text: str) -> None:
        self.out.append(text)
        self.lex.feed(text)

    def pieces(self, pieces: tuple[Piece, ...], after: str | None) -> None:
        """Render ``pieces``; ``after`` is the text that follows them (None: the end of the command)."""
        for k, p in enumerate(pieces):
            if isinstance(p, str):
                self.literal(p)
                continue
            if k + 1 < len(pieces):
                nxt = pieces[k + 1]
                glued_right = not isinstance(nxt, str) or nxt[:1] not in _BOUNDARY
            else:
                glued_right = after is not None and after[:1] not in _BOUNDARY
            self.field(p, glued_right)

    def field(self, f: Field, glued_right: bool) -> None:
        place = self.lex.place()
        if place.quote == "comment" or (f.dollar and (f.source in self.shell_names or place.quote in
                                                      ("squote", "ansi"))):
            self.keep(f)
            return
        value = evaluate(f, self.namespace)
        if value is KEEP:
            self.keep(f)
            return
        self.insert(f, place, value, glued_right)

    def keep(self, f: Field) -> None:
        if f.dollar:
            self.literal(f.text)
            return
        self.literal("{")
        self.pieces(f.inner, "}")
        self.literal("}")

    def insert(self, f: Field, place: Place, value: Any, glued_right: bool) -> None:
        before = self.lex.key()
        try:
            text = quote_at(place, value, glued_right=glued_right)
        except Unquotable as e:
            raise _refusal(f, e, value) from None
        if place.mark is not None and not (isinstance(value, int) and not isinstance(value, bool)):
            place.mark(id(f))
            self.marked[id(f)] = (f, value)
        self.out.append(text)
        self.lex.feed(text)
        self.lex.settle()
        if self.lex.key() != before:  # the value changed how bash reads the rest: never let it through
            raise SpecError(f"{f.label} cannot be quoted where it stands: pass it with --env "
                            f"{_env_name(f)[1]} and write \"${_env_name(f)[0]}\" there")

    def run(self, template: Template) -> str:
        try:
            self.pieces(template.pieces, None)
            self.lex.end()
        except Unclosed as e:
            raise SpecError(f"unclosed {e.quote} quote in the command") from None
        except Unquotable as e:
            f, value = self.marked[e.tag]
            raise _refusal(f, e, value) from None
        return "".join(self.out)


def expand_shell(command: str | Template, namespace: Mapping[str, Any]) -> str:
    """``command`` with each field that evaluates quoted for where it stands in bash's grammar.

    Raises ``SpecError`` (one line, naming the field) for a field that fails,
    a value that cannot be made safe where it stands, or an unclosed quote.
    """
    template = command if isinstance(command, Template) else Template(command)
    text = _ShellRender(template, namespace).run(template)
    # ``bash -c -n…`` would read a leading '-' or '+' (a value such as -n put first) as its own option
    return " " + text if text[:1] in "-+" else text
