"""Text with ``{expr}`` and ``$name`` fields: found once, without a namespace; evaluated by one set of rules.

``Template(text, dollar=...)`` splits ``text`` into literal pieces and
``Field``s. Escapes: ``{{`` and ``}}`` are literal braces; ``$$name`` is a
literal ``$name`` (any other ``$$`` stays ``$$``, the shell's process id); a
backslash before ``$``, ``{``, ``}`` or ``\\`` keeps that character from the
expander (both characters stay in the text). ``${`` is never a field: it and
its closing ``}`` belong to the shell, but fields inside it are found. A ``{``
without its ``}`` and a lone ``}`` are literal.

``evaluate(field, namespace, strict=...)`` applies the rules of a field:

* ``$name`` expands when ``name`` is in the namespace;
* ``{expr}`` expands when ``expr`` is a Python expression that reads at least
  one name of the namespace and evaluates;
* otherwise the field is kept as written (``KEEP``): ``{}``, ``{1..3}``,
  awk's ``{print $1}``, jq's ``{id, type}`` (builtins only), a JSON example;
  with ``strict`` (option values, where nothing else would read the text) a
  field that reads a name that is not defined is an error instead;
* an expression that raises anything but ``NameError`` is an error.

Every error is a one-line ``SpecError`` naming the field as written.
"""
from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from ..core.errors import SpecError
from ..core.runners.python import FallbackGlobals

__all__ = ["KEEP", "Field", "Piece", "Template", "closing_brace", "evaluate"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: what ``evaluate`` returns for a field that stays as written
KEEP: Any = type("Keep", (), {"__repr__": lambda self: "KEEP"})()


def closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` that closes the ``{`` at ``start``, or -1.

    Brackets nested inside the field and quoted Python strings (with
    backslash escapes) are skipped, so ``{d["}"]}`` and ``{f(a, [b])}`` are
    one field each. A ``)`` or ``]`` that closes the field itself means there
    is no field (-1).
    """
    depth = 0
    quote = ""
    j = start
    n = len(text)
    while j < n:
        c = text[j]
        if quote:
            if c == "\\":
                j += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
            if depth == 0:
                return j if c == "}" else -1
        j += 1
    return -1


@dataclass(frozen=True)
class Field:
    """One ``{expr}`` or ``$name`` as written.

    ``source`` is the text inside the braces (or the name after ``$``);
    ``code`` its compiled expression (None when it is not Python); ``reads``
    the names it reads from outside itself; ``inner`` the pieces inside the
    braces, used when the field stays as written (``{ echo {x}; }`` keeps its
    braces and still expands ``{x}``); ``line`` counts from 0 within the text.
    """

    source: str
    dollar: bool
    code: CodeType | None
    reads: frozenset[str]
    inner: tuple[Piece, ...]
    line: int = 0

    @property
    def text(self) -> str:
        """The field as written."""
        return "$" + self.source if self.dollar else "{" + self.source + "}"

    @property
    def label(self) -> str:
        """The field as named in messages (surrounding blanks dropped)."""
        return "$" + self.source if self.dollar else "{" + self.source.strip() + "}"

    @property
    def tree(self) -> ast.Expression | None:
        """The parsed expression (None for ``$name`` and for a field that is not Python)."""
        if self.code is None or self.dollar:
            return None
        return ast.parse(self.source.strip(), mode="eval")


Piece = str | Field


def _reads(tree: ast.AST) -> frozenset[str]:
    """Names an expression reads from outside itself (not those its comprehensions or lambdas bind)."""
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                     and n.id not in bound)


def _brace(source: str, dollar: bool, line: int) -> Field:
    code, reads = None, frozenset()
    expr = source.strip()
    if expr:
        try:
            tree = ast.parse(expr, mode="eval")
            code = compile(tree, "<field>", "eval")
            reads = _reads(tree)
        except (SyntaxError, ValueError):
            code = None
    return Field(source, False, code, reads, _parse(source, dollar, line), line)


def _parse(text: str, dollar: bool, line: int = 0) -> tuple[Piece, ...]:
    pieces: list[Piece] = []
    buf: list[str] = []
    i, n = 0, len(text)
    params = 0  # ${ opened and not yet closed

    def flush() -> None:
        if buf:
            pieces.append("".join(buf))
            buf.clear()

    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and (text[i + 1] in "\\{}" or (dollar and text[i + 1] == "$")):
            buf.append(text[i:i + 2])
            i += 2
        elif c == "{":
            if text.startswith("{{", i):
                buf.append("{")
                i += 2
                continue
            end = closing_brace(text, i)
            if end < 0:
                buf.append("{")
                i += 1
                continue
            flush()
            pieces.append(_brace(text[i + 1:end], dollar, line + text.count("\n", 0, i)))
            i = end + 1
        elif c == "}":
            if params:
                params -= 1
                buf.append("}")
                i += 1
            elif text.startswith("}}", i):
                buf.append("}")
                i += 2
            else:
                buf.append("}")
                i += 1
        elif c == "$" and dollar:
            nxt = text[i + 1:i + 2]
            if nxt == "{":
                params += 1
                buf.append("${")
                i += 2
            elif nxt == "$":
                if _IDENT.match(text, i + 2):
                    buf.append("$")  # $$name: a literal $name
                else:
                    buf.append("$$")
                i += 2
            else:
                m = _IDENT.match(text, i + 1)
                if m:
                    flush()
                    pieces.append(Field(m.group(), True, None, frozenset({m.group()}), (),
                                        line + text.count("\n", 0, i)))
                    i = m.end()
                else:
                    buf.append("$")
                    i += 1
        else:
            j = i + 1
            while j < n and text[j] not in "\\{}$":
                j += 1
            buf.append(text[i:j])
            i = j
    flush()
    return tuple(pieces)


class Template:
    """``text`` split into literal pieces and fields, once (no namespace needed).

    ``dollar``: ``$name`` is a field (commands and option values; not prompts).
    """

    def __init__(self, text: str, *, dollar: bool = True) -> None:
        self.source = text
        self.dollar = dollar
        self.pieces: tuple[Piece, ...] = _parse(text, dollar)

    def fields(self) -> Iterator[Field]:
        """Every field, those inside a field's braces too, in order."""

        def walk(pieces: tuple[Piece, ...]) -> Iterator[Field]:
            for p in pieces:
                if isinstance(p, Field):
                    yield p
                    yield from walk(p.inner)

        return walk(self.pieces)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def _undefined(field: Field, name: str) -> SpecError:
    if field.dollar:
        return SpecError(f"{field.label}: name {name!r} is not defined (write $${name} for a literal ${name})")
    return SpecError(f"{field.label}: name {name!r} is not defined (write {{{{ and }}}} for literal braces)")


def evaluate(field: Field, namespace: Mapping[str, Any], *, strict: bool = False) -> Any:
    """The value of ``field`` against ``namespace``, or ``KEEP`` when it stays as written (rules above)."""
    if field.dollar:
        if field.source in namespace:
            return namespace[field.source]
        if strict:
            raise _undefined(field, field.source)
        return KEEP
    if field.code is None:
        return KEEP
    if not any(name in namespace for name in field.reads):
        unknown = sorted(n for n in field.reads if not hasattr(builtins, n))
        if unknown and strict:
            raise _undefined(field, unknown[0])
        return KEEP
    try:
        return eval(field.code, FallbackGlobals({"__builtins__": builtins}, namespace))  # noqa: S307 - the user's own
    except NameError as e:
        if strict:
            raise _undefined(field, getattr(e, "name", None) or str(e)) from None
        return KEEP
    except Exception as e:
        text = str(e).splitlines()[0] if str(e) else ""
        raise SpecError(f"{field.label} failed: {type(e).__name__}" + (f": {text}" if text else "")) from None
