"""Trailing ``# comments`` on magic lines that take words (actions, a cell magic's first line).

A ``#`` that starts a word outside quotes begins a comment, as in bash and as
people type after Python code: ``%bg --list  # what runs``. A ``#`` inside
quotes or inside a word (``--model echo#v2``) is text. Bodies (a command, a
Python statement, a prompt) are never passed through here: their own language
decides what a ``#`` means.
"""
from __future__ import annotations


def strip_comment(line: str) -> str:
    """``line`` without its trailing comment (unchanged when it has none or a quote is left open)."""
    quote = ""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c == "\\":
            i += 2
            continue
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
        i += 1
    return line


__all__ = ["strip_comment"]
