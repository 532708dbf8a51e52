"""Finding ``{expr}`` fields in text: the one brace matcher shared by every expander."""
from __future__ import annotations


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
