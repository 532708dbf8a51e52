"""The process table as ``/proc`` shows it: sessions, descendants, marked processes, start times.

Standard library only and no package-relative imports: the reaper and the
supervisor processes run this file's functions without loading the package.
Every reader tolerates processes that end while it looks at them.
"""
from __future__ import annotations

import os

#: the environment variable that marks every process a kernel's tasks start: ``token[:token...]``
MARK_VAR = "TTASKS_OWNERS"


class ProcInfo:
    """One process as ``/proc/PID/stat`` describes it (a plain class: ``typing`` costs the helpers 10 ms to import)."""

    __slots__ = ("pid", "ppid", "pgid", "sid", "state", "start")

    def __init__(self, pid: int, ppid: int, pgid: int, sid: int, state: str, start: int) -> None:
        self.pid = pid
        self.ppid = ppid
        self.pgid = pgid
        self.sid = sid
        #: one letter: R, S, D, Z (zombie), T...
        self.state = state
        #: start time in clock ticks since boot (with the pid, it names a process for good)
        self.start = start

    def __repr__(self) -> str:
        return (f"ProcInfo(pid={self.pid}, ppid={self.ppid}, pgid={self.pgid}, sid={self.sid}, "
                f"state={self.state!r}, start={self.start})")


def _parse_stat(pid: int, stat: bytes) -> ProcInfo | None:
    # the fields after the command name, which is in parentheses and may hold spaces and ')'
    rest = stat[stat.rfind(b")") + 2:].split()
    if len(rest) < 20:
        return None
    return ProcInfo(pid, int(rest[1]), int(rest[2]), int(rest[3]), rest[0].decode(), int(rest[19]))


def proc_info(pid: int) -> ProcInfo | None:
    """What ``/proc`` says about ``pid``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return _parse_stat(pid, f.read())
    except (OSError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (compare it to tell a reused pid apart)."""
    info = proc_info(pid)
    return info.start if info is not None else None


def snapshot() -> list[ProcInfo]:
    """Every process (zombies included, see ``ProcInfo.state == 'Z'``)."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None:
                out.append(info)
    return out


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:  # the hot path of every command's end: only the two fields it needs
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split(None, 5)
        if len(rest) > 4 and rest[0] != b"Z" and int(rest[3]) == sid:
            members.append(int(entry))
    return members


def descendants(root: int, table: list[ProcInfo] | None = None) -> list[int]:
    """Live (not zombie) processes below ``root`` by parent links (``root`` itself not included)."""
    table = snapshot() if table is None else table
    children: dict[int, list[ProcInfo]] = {}
    for p in table:
        children.setdefault(p.ppid, []).append(p)
    out: list[int] = []
    todo = [root]
    seen = {root}
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.pid not in seen:
                seen.add(child.pid)
                todo.append(child.pid)
                if child.state != "Z":
                    out.append(child.pid)
    return out


def is_marked(pid: int, token: str) -> bool:
    """Whether ``pid`` was started with ``token`` in its ``TTASKS_OWNERS`` environment variable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:  # gone, or not ours to read
        return False
    key = MARK_VAR.encode() + b"="
    want = token.encode()
    for entry in env.split(b"\0"):
        if entry.startswith(key):
            return want in entry[len(key):].split(b":")
    return False


def marked_processes(token: str, exclude: int | None = None) -> list[int]:
    """Live processes that carry ``token`` in their ``TTASKS_OWNERS`` (see ``mark_environ``)."""
    me = os.getpid()
    return [p.pid for p in snapshot()
            if p.state != "Z" and p.pid not in (me, exclude) and is_marked(p.pid, token)]


def mark_environ(env: dict[str, str], token: str) -> dict[str, str]:
    """``env`` with ``token`` added to ``TTASKS_OWNERS`` (kept: the marks of outer kernels)."""
    old = env.get(MARK_VAR, "")
    if token in old.split(":"):
        return env
    return {**env, MARK_VAR: f"{old}:{token}" if old else token}


def signal_pids(pids: list[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids``, ignoring those already gone."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def signal_tree(sid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``sid`` and any session member outside it; True if any was alive."""
    alive = False
    try:
        os.killpg(sid, sig)
        alive = True
    except (ProcessLookupError, PermissionError):
        pass
    members = session_members(sid)
    signal_pids(members, sig)
    return alive or bool(members)


def tree_alive(sid: int) -> bool:
    """Whether any live process remains in session ``sid``."""
    return bool(session_members(sid))


__all__ = [
    "MARK_VAR", "ProcInfo", "descendants", "is_marked", "mark_environ", "marked_processes", "proc_info",
    "session_members", "signal_pids", "signal_tree", "snapshot", "start_time", "tree_alive",
]
