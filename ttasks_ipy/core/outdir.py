"""The one output folder of a kernel: created private, removed without making the kernel wait, swept after a crash.

``OutputDir.create()`` makes ``<tmp>/ttasks-XXXXXXXX`` (mode 0700) and writes
an owner file in it: the owner's pid, its start time, the boot id and its pid
namespace, which together name one process for good. ``remove_async()``
renames the folder aside (``...removing``, instant) and leaves the removal to
a detached ``rm -rf``, so a kernel with thousands of task folders exits at
once. ``sweep_dead()`` removes the folders whose owner is no longer alive
(a kernel that was SIGKILLed could not remove its own) and the leftovers of
interrupted removals; a folder without an owner file, or whose owner runs in
another pid namespace or boot, is never touched.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .proctable import start_time

log = logging.getLogger("ttasks_ipy")

PREFIX = "ttasks-"
OWNER_FILE = ".owner"
ASIDE_SUFFIX = ".removing"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


def owner_line(pid: int | None = None) -> str:
    """The owner file's text for process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid} {start_time(pid)} {_read('/proc/sys/kernel/random/boot_id')} {_pid_namespace()}\n"


def owner_alive(line: str) -> bool:
    """Whether the process an owner line names still runs (True when it cannot be told: never remove then)."""
    parts = line.split()
    if len(parts) != 4 or not parts[0].isdigit():
        return True
    pid, start, boot, ns = parts
    if boot != _read("/proc/sys/kernel/random/boot_id") or ns != _pid_namespace():
        return True  # another boot or another pid namespace: its pids mean nothing here
    return str(start_time(int(pid))) == start


class OutputDir:
    """One private folder for a kernel's task output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._removed = False

    @classmethod
    def create(
        cls, parent: str | os.PathLike[str] | None = None, prefix: str = PREFIX, *, sweep: bool = True
    ) -> OutputDir:
        """Make a new private folder under ``parent`` (the temp folder by default) owned by this process.

        With ``sweep``, the folders of dead owners beside it are removed too (found by a daemon thread).
        """
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        os.chmod(path, 0o700)
        (path / OWNER_FILE).write_text(owner_line())
        if sweep:
            threading.Thread(target=sweep_dead, args=(path.parent, prefix), name="ttasks-sweep", daemon=True).start()
        return cls(path)

    def remove_async(self) -> None:
        """Remove the folder without waiting: renamed aside now, deleted by a detached ``rm -rf``."""
        if self._removed:
            return
        self._removed = True
        aside = self.path.with_name(self.path.name + ASIDE_SUFFIX)
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        except OSError:
            aside = self.path
        remove_detached(aside)

    def __repr__(self) -> str:
        return f"OutputDir({str(self.path)!r})"


def remove_detached(*paths: Path) -> None:
    """``rm -rf`` the ``paths`` in a process of its own, reaped by a daemon thread (no rm: ``shutil.rmtree``)."""
    if not paths:
        return
    try:
        p = subprocess.Popen(["rm", "-rf", "--", *map(str, paths)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                             close_fds=True, cwd="/")
    except OSError:
        def rmtree_all() -> None:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

        threading.Thread(target=rmtree_all, name="ttasks-rmtree", daemon=True).start()
        return
    threading.Thread(target=p.wait, name="ttasks-rm", daemon=True).start()


def dead_folders(parent: str | os.PathLike[str] | None = None, prefix: str = PREFIX) -> list[Path]:
    """Output folders under ``parent`` that no live process owns (ours by uid only)."""
    base = Path(parent or tempfile.gettempdir())
    found = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return found
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if entry.name.endswith(ASIDE_SUFFIX):
            found.append(Path(entry.path))  # a removal that was cut short
            continue
        line = _read(os.path.join(entry.path, OWNER_FILE))
        if line != "?" and not owner_alive(line):
            found.append(Path(entry.path))
    return found


def sweep_dead(parent: str | os.PathLike[str] | None = None, prefix: str = PREFIX, *, wait: bool = False) -> int:
    """Remove the output folders of dead owners under ``parent``; returns how many were found.

    The removal runs detached unless ``wait``; finding them costs one scan of the folder.
    """
    folders = dead_folders(parent, prefix)
    if wait:
        for path in folders:
            shutil.rmtree(path, ignore_errors=True)
    else:
        remove_detached(*folders)
    if folders:
        log.debug("removing %d output folders left by kernels that are gone", len(folders))
    return len(folders)
