"""Results kept in the ledger: the names a task delivered, serialised with cloudpickle within a cap.

Each name is serialised on its own, so that one value that cannot be kept
(a lock, an open file, something too big) does not lose the others; what was
not kept is said in one line. Loading runs code (unpickling): the kernel side
reads only a ledger file owned by the user and writable by no one else.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import cloudpickle

#: the protocol written (readable by every Python this package supports)
PROTOCOL = 5


def _size(n: int) -> str:
    for unit, k in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def _dumps(value: Any) -> bytes:
    """``value`` pickled; with cloudpickle (by value) when it refers to ``__main__``, which a later kernel lacks."""
    try:
        data = pickle.dumps(value, protocol=PROTOCOL)
    except Exception:
        return cloudpickle.dumps(value, protocol=PROTOCOL)
    if b"__main__" in data:  # a class or function of the notebook itself
        return cloudpickle.dumps(value, protocol=PROTOCOL)
    return data


def pack(values: Mapping[str, Any], cap: int) -> tuple[bytes | None, tuple[str, ...], str | None]:
    """``(blob, kept names, note)``: the values that serialise within ``cap`` bytes in all.

    ``note`` says what was not kept and why (None when everything was).
    """
    kept: dict[str, bytes] = {}
    missed: list[str] = []
    total = 0
    for name, value in values.items():
        try:
            data = _dumps(value)
        except Exception as e:  # anything a value's __reduce__ may raise
            missed.append(f"{name} (cannot be serialised: {type(e).__name__})")
            continue
        if total + len(data) > cap:
            missed.append(f"{name} ({_size(len(data))}, over ledger_result_cap of {_size(cap)})")
            continue
        kept[name] = data
        total += len(data)
    note = f"not kept: {', '.join(missed)}" if missed else None
    if not kept:
        return None, (), note
    return pickle.dumps(kept, protocol=PROTOCOL), tuple(kept), note


def unpack(blob: bytes) -> dict[str, Any]:
    """The values ``pack`` kept, by name. Runs code: call it only on a trusted ledger."""
    parts = pickle.loads(blob)  # noqa: S301 - a private file of the user's own (see the module docstring)
    return {name: pickle.loads(data) for name, data in parts.items()}  # noqa: S301


__all__ = ["PROTOCOL", "pack", "unpack"]
