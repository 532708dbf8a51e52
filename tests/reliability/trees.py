"""Random process trees for the orphan trials, and the bookkeeping that counts what outlived them.

A tree is a bash script built from pieces, each of which starts long-lived
processes in one of the ways that make them hard to end (SIGTERM ignored,
backgrounded grandchildren, ``nohup``, ``setsid``, double forks, Python
children ignoring SIGTERM, a cleared environment) and appends the pid of each
to the file named by ``$R``. ``Tree.expected`` says how many pids a complete
tree records.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ttasks_ipy.core.proctable import proc_info, signal_pids

PY = f"{sys.executable} -I -S"
_PY_IGNORE_TERM = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
_PY_RECORD = "open(os.environ['R'], 'a').write(f'{os.getpid()}\\n'); time.sleep(300)"

#: (bash text, pids it records)
PIECES: dict[str, tuple[str, int]] = {
    "term-ignoring-subshell": ("(trap '' TERM; echo $BASHPID >> $R; exec sleep 300) &", 1),
    "grandchild": ("( echo $BASHPID >> $R; sleep 300 & echo $! >> $R; wait ) &", 2),
    "nohup": ("nohup sleep 300 > /dev/null 2>&1 & echo $! >> $R", 1),
    "setsid": ("setsid sleep 300 & echo $! >> $R", 1),
    "setsid-fork-ignoring-term": (
        "setsid -f bash -c 'trap \"\" TERM; echo $$ >> \"$0\"; exec sleep 300' \"$R\"", 1),
    "python-ignoring-term": (f"{PY} -c \"{_PY_IGNORE_TERM}{_PY_RECORD}\" &", 1),
    "python-setsid-ignoring-term": (f"{PY} -c \"{_PY_IGNORE_TERM}os.setsid(); {_PY_RECORD}\" &", 1),
    "double-fork-daemon": (
        f"{PY} -c \"import os, sys\nif os.fork(): sys.exit(0)\nos.setsid()\nif os.fork(): sys.exit(0)\n"
        f"{_PY_IGNORE_TERM}{_PY_RECORD}\"", 1),
    "no-environment-setsid": ("env -i setsid -f /bin/sh -c 'echo $$ >> \"$0\"; exec sleep 300' \"$R\"", 1),
}


@dataclass
class Tree:
    """One trial's command and where its pids go."""

    script: str
    record: Path
    expected: int
    pieces: list[str] = field(default_factory=list)

    def command(self) -> str:
        return f"export R={self.record}\n{self.script}"

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in self.record.read_text().split()]
        except FileNotFoundError:
            return []

    def wait_complete(self, timeout: float) -> bool:
        """Until every piece recorded its pids (bounded)."""
        end = time.monotonic() + timeout
        while len(self.pids()) < self.expected:
            if time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True


def random_tree(rng: random.Random, record: Path, *, ends_itself: bool = False) -> Tree:
    """A shell (maybe ignoring SIGTERM) running 1-4 pieces, maybe nested one level in a child bash."""
    names = [rng.choice(sorted(PIECES)) for _ in range(rng.randint(1, 4))]
    lines, expected = [], 1
    nested = rng.random() < 0.3 and len(names) > 1
    inner = names[len(names) // 2:] if nested else []
    for name in names[: len(names) - len(inner)]:
        text, n = PIECES[name]
        lines.append(text)
        expected += n
    if inner:  # a child shell that ignores TERM and starts the rest
        body = "trap '' TERM; echo $$ >> $R\n" + "\n".join(PIECES[n][0] for n in inner) + "\nsleep 300"
        lines.append(f"bash -c {_quote(body)} &")
        expected += 1 + sum(PIECES[n][1] for n in inner)
    head = "trap '' TERM\n" if rng.random() < 0.5 else ""
    tail = "true" if ends_itself else "sleep 300"
    script = head + "\n".join(lines) + "\necho $$ >> $R\n" + tail
    return Tree(script, record, expected, names)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class Census:
    """Processes recorded by trials, named for good by pid and start time; ``survivors`` counts orphans."""

    def __init__(self) -> None:
        self.known: dict[int, int] = {}

    def add(self, pids: list[int]) -> None:
        for pid in pids:
            info = proc_info(pid)
            if info is not None and pid not in self.known:
                self.known[pid] = info.start

    def alive(self, pids: list[int] | None = None) -> list[int]:
        out = []
        for pid in self.known if pids is None else pids:
            info = proc_info(pid)
            if info is not None and info.state != "Z" and info.start == self.known.get(pid):
                out.append(pid)
        return out

    def wait_gone(self, pids: list[int], timeout: float) -> list[int]:
        """The recorded ``pids`` still alive after up to ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            left = self.alive(pids)
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.05)

    def kill_all(self) -> None:
        """End every recorded process still alive (after a failed trial, so that nothing is left behind)."""
        signal_pids(self.alive(), 9)
