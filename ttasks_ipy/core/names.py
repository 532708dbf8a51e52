"""The one rule for the names of tasks, graphs and delivery targets."""
from __future__ import annotations

import keyword

from .errors import SpecError

#: words that stand for several tasks in ``--wait``/``--cancel``: never a task's or a graph's name
RESERVED = frozenset({"all", "any"})


def check_name(name: object, what: str = "task", where: str = "", *, reserved: bool = True) -> str:
    """Return ``name`` if it is an identifier that is not a Python keyword (nor ``all``/``any``); else ``SpecError``.

    ``what`` says what is named ('task', 'graph', 'variable'); ``where``
    prefixes the message ('line 3: '). ``reserved=False`` allows ``all`` and
    ``any`` (a variable may be called that).
    """
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise SpecError(
            f"{where}{what} name {name!r} is not usable: use an identifier (letters, digits, _) "
            "that is not a Python keyword"
        )
    if reserved and name in RESERVED:
        raise SpecError(f"{where}{what} name {name!r} is reserved ({' and '.join(sorted(RESERVED))} stand for "
                        "several tasks in --wait and --cancel): choose another name")
    return name
