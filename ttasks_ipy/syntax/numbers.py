"""The one reader of numbers in the user's words (``--timeout 5``, ``retries=2``): ASCII only, finite, bounded.

``str.isdigit`` accepts ``²`` and ``float`` accepts ``inf``, ``nan``, ``1e300``
and Unicode digits; here a number is written with ASCII digits, a point and
an exponent, and must fall within sane bounds, or it is one ``SpecError``
naming the option and saying what would be right.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from ..core.errors import SpecError
from ..core.spec import MAX_SECONDS

_WHOLE = re.compile(r"[0-9]+\Z")
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
#: the largest count accepted (retries, --tail, --max-parallel)
MAX_COUNT = 1_000_000


def seconds(label: str, text: str, *, allow_zero: bool = False) -> float:
    """``text`` as a number of seconds: > 0 (or >= 0 with ``allow_zero``), at most a year."""
    what = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
    v = float(text) if _DECIMAL.match(text) else -1.0
    if v > MAX_SECONDS or v < 0 or (v == 0 and not allow_zero):
        raise SpecError(f"{label} must be {what} (like 30 or 1.5; at most a year), not {text!r}")
    return v


def count(label: str, text: str, *, low: int = 0, high: int = MAX_COUNT) -> int:
    """``text`` as a whole number from ``low`` to ``high``."""
    v = int(text) if _WHOLE.match(text) else -1
    if not low <= v <= high:
        raise SpecError(f"{label} must be a whole number from {low} to {high} (digits 0-9), not {text!r}")
    return v


def argparse_message(message: str) -> str:
    """argparse's error without its ``argument --x:`` prefix when the rest names the option already."""
    head, sep, rest = message.partition(": ")
    if sep and head.startswith("argument ") and rest.startswith(head[len("argument "):].split("/")[-1]):
        return rest
    return message


def arg_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """``parse`` as an argparse ``type=`` (its ``SpecError`` becomes argparse's one-line error)."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except SpecError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert
