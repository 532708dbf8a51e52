"""The user's words: split a ``%bg`` line into options and body, expand values safely.

``split_options`` walks the leading ``-...`` tokens only (``--`` ends them) and
keeps the rest of the line exactly as typed. ``expand_shell`` expands
``{expr}`` and ``$name`` into a command with shell quoting that follows the
quote state it is in; ``expand_text`` does the same without quoting (option
values, prompts). ``{{``, ``}}`` and ``$$`` escape. An unknown name or a
failing expression raises ``SpecError`` naming it.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from ..core.errors import SpecError
from ..core.fields import closing_brace

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def _evaluate(expr: str, namespace: Mapping[str, Any]) -> Any:
    expr = expr.strip()
    if not expr:
        raise SpecError("empty {} in the text: write {{}} for literal braces")
    try:
        return eval(expr, {"__builtins__": __builtins__}, namespace)  # noqa: S307 - the user's own expression
    except NameError as e:
        name = getattr(e, "name", None) or str(e)
        raise SpecError(f"{{{expr}}}: name {name!r} is not defined (write {{{{ and }}}} for literal braces)") from None
    except Exception as e:
        raise SpecError(f"{{{expr}}} failed: {type(e).__name__}: {e}") from None


def _scan(
    text: str,
    namespace: Mapping[str, Any],
    emit: Callable[[str, Any, str], str],
    literal: Callable[[str], None],
    dollar: bool,
) -> None:
    """Walk ``text``, calling ``literal(piece)`` for plain text and ``emit(kind, value, source)`` for each expansion."""
    i, n = 0, len(text)
    start = 0
    while i < n:
        c = text[i]
        if c == "{":
            if text.startswith("{{", i):
                literal(text[start:i] + "{")
                i += 2
                start = i
                continue
            end = closing_brace(text, i)
            if end < 0:
                raise SpecError(f"unclosed '{{' at column {i + 1}: write {{{{ for a literal brace")
            literal(text[start:i])
            expr = text[i + 1:end]
            emit("brace", _evaluate(expr, namespace), expr)
            i = end + 1
            start = i
            continue
        if c == "}":
            if text.startswith("}}", i):
                literal(text[start:i] + "}")
                i += 2
                start = i
                continue
            raise SpecError(f"single '}}' at column {i + 1}: write }}}} for a literal brace")
        if c == "$" and dollar:
            if text.startswith("$$", i):
                literal(text[start:i] + "$")
                i += 2
                start = i
                continue
            m = _IDENT.match(text, i + 1)
            if m:
                name = m.group()
                if name not in namespace:
                    raise SpecError(
                        f"${name}: name {name!r} is not defined in the namespace "
                        f"(write $${name} for the shell's own variable)"
                    )
                literal(text[start:i])
                emit("dollar", namespace[name], "$" + name)
                i = m.end()
                start = i
                continue
        i += 1
    literal(text[start:])


def expand_text(text: str, namespace: Mapping[str, Any], *, dollar: bool = True) -> str:
    """Expand ``{expr}`` (and ``$name`` if ``dollar``) with ``str()`` of each value, no quoting."""
    out: list[str] = []
    _scan(text, namespace, lambda kind, v, src: out.append(str(v)) or "", out.append, dollar)
    return "".join(out)


def _as_args(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def expand_shell(command: str, namespace: Mapping[str, Any]) -> str:
    """Expand ``{expr}`` and ``$name`` in a bash command, quoting each value for where it stands.

    Outside quotes a value is ``shlex.quote``d (a list or tuple becomes several
    arguments); inside double quotes it is backslash-escaped; inside single
    quotes the quote is closed, the quoted value put in, and the quote reopened.
    """
    out: list[str] = []
    state = {"quote": None}

    def literal(piece: str) -> None:
        out.append(piece)
        q = state["quote"]
        i = 0
        while i < len(piece):
            c = piece[i]
            if q == "'":
                if c == "'":
                    q = None
            elif q == '"':
                if c == "\\":
                    i += 1
                elif c == '"':
                    q = None
            else:
                if c == "\\":
                    i += 1
                elif c in "'\"":
                    q = c
            i += 1
        state["quote"] = q

    def emit(kind: str, value: Any, src: str) -> str:
        q = state["quote"]
        args = _as_args(value)
        if q is None:
            out.append(" ".join(shlex.quote(a) for a in args))
        elif q == '"':
            out.append(" ".join(re.sub(r'([\\"$`])', r"\\\1", a) for a in args))
        else:
            out.append("'" + " ".join(shlex.quote(a) for a in args) + "'")
        return ""

    _scan(command, namespace, emit, literal, True)
    if state["quote"]:
        raise SpecError(f"unclosed {state['quote']} quote in the command")
    return "".join(out)
