"""A kernel's output folder: removed without making it wait, and after a crash by its reaper or the next load."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import start_kernel, stop_kernel
from helpers import wait_until

from ttasks_ipy.core import BashRunner, Executor, TaskSpec
from ttasks_ipy.core.outdir import (
    ASIDE_SUFFIX,
    OWNER_FILE,
    OutputDir,
    dead_folders,
    owner_alive,
    owner_line,
    sweep_dead,
)


def dead_owner_line() -> str:
    p = subprocess.Popen(["sleep", "30"])
    line = owner_line(p.pid)
    p.kill()
    p.wait()
    return line


def test_a_new_folder_is_private_and_names_its_owner(tmp_path):
    d = OutputDir.create(tmp_path, sweep=False)
    assert d.path.parent == tmp_path and d.path.name.startswith("ttasks-")
    assert os.stat(d.path).st_mode & 0o777 == 0o700
    line = (d.path / OWNER_FILE).read_text()
    assert line.split()[0] == str(os.getpid()) and owner_alive(line)
    assert not owner_alive(dead_owner_line())


def test_remove_async_returns_at_once_with_thousands_of_task_folders(tmp_path):
    d = OutputDir.create(tmp_path, sweep=False)
    for i in range(2000):
        (d.path / str(i)).mkdir()
        (d.path / str(i) / "stdout.txt").write_text("x" * 100)
        (d.path / str(i) / "stderr.txt").write_text("")
    t0 = time.perf_counter()
    d.remove_async()
    took = time.perf_counter() - t0
    assert not d.path.exists()  # renamed aside at once: the name is free
    assert took < 0.1, took
    wait_until(lambda: not list(tmp_path.iterdir()), 20, "the folder removed in the background")


def test_the_sweep_removes_only_folders_of_dead_owners(tmp_path):
    def folder(name: str, owner: str | None) -> Path:
        p = tmp_path / name
        p.mkdir()
        if owner is not None:
            (p / OWNER_FILE).write_text(owner)
        return p

    pid, start, boot, ns = owner_line().split()
    dead = folder("ttasks-dead", dead_owner_line())
    reused = folder("ttasks-reused", f"{pid} {int(start) + 1} {boot} {ns}\n")  # same pid, another process
    cut_short = folder("ttasks-x" + ASIDE_SUFFIX, None)
    keep = [
        folder("ttasks-mine", owner_line()),
        folder("ttasks-1", owner_line(1)),
        folder("ttasks-old", None),  # an older version's folder, or one being created: cannot tell
        folder("ttasks-odd", "garbage\n"),
        folder("ttasks-otherboot", dead_owner_line().replace(boot, "another-boot")),
        folder("ttasks-otherns", dead_owner_line().replace(ns, "pid:[1]")),
        folder("other-dead", dead_owner_line()),
    ]
    assert sorted(dead_folders(tmp_path)) == sorted([dead, reused, cut_short])
    assert sweep_dead(tmp_path, wait=True) == 3
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_executor_shutdown_with_thousands_of_task_folders_does_not_wait_for_their_removal():
    ex = Executor(grace=0.3)
    tasks = [ex.submit(TaskSpec(BashRunner("echo x"))) for _ in range(300)]
    for t in tasks:
        assert t.wait(30).status == "succeeded"
    for i in range(2000):  # the folders of many more tasks, as a long session leaves them
        (ex.output_dir / f"extra{i}").mkdir()
        (ex.output_dir / f"extra{i}" / "stdout.txt").write_text("x")
    path = ex.output_dir
    t0 = time.perf_counter()
    ex.shutdown()
    assert time.perf_counter() - t0 < 1.0
    assert not path.exists()
    wait_until(lambda: not path.with_name(path.name + ASIDE_SUFFIX).exists(), 20, "removed in the background")


# ---- after a crash ------------------------------------------------------------------
def kernel_dir(k) -> Path:
    return Path(k.value("str(__import__('ttasks_ipy').kernel.session().executor.output_dir)").strip("'"))


def test_a_sigkilled_kernels_folder_is_removed_by_its_reaper(tmp_path):
    k = start_kernel(env={"TMPDIR": str(tmp_path)})
    try:
        k.run("h = %bg !echo hi\nh.wait(10)")
        d = kernel_dir(k)
        assert d.parent == tmp_path and (d / "1").is_dir()
        os.kill(k.pid, signal.SIGKILL)
        wait_until(lambda: not d.exists(), 2.0 + 5, f"{d} removed")
    finally:
        stop_kernel(k)


def test_the_next_load_removes_the_folder_of_a_kernel_whose_reaper_died_too(tmp_path):
    k = start_kernel(env={"TMPDIR": str(tmp_path)})
    try:
        k.run("h = %bg !echo hi\nh.wait(10)")
        d = kernel_dir(k)
        reaper = int(k.value("__import__('ttasks_ipy').kernel.session().executor.reaper.pid"))
        os.kill(k.pid, signal.SIGSTOP)  # frozen, so that it cannot replace its reaper
        os.kill(reaper, signal.SIGKILL)
        os.kill(k.pid, signal.SIGKILL)
        assert d.exists()  # nobody left to remove it
    finally:
        stop_kernel(k)
    k2 = start_kernel(env={"TMPDIR": str(tmp_path)})
    try:
        wait_until(lambda: not d.exists(), 10, f"{d} removed by the next load")
        assert kernel_dir(k2).exists()
    finally:
        stop_kernel(k2)


def test_an_output_folder_the_caller_names_is_made_if_missing_and_private(tmp_path):
    import stat

    from ttasks_ipy.core import BashRunner, Executor, TaskSpec

    where = tmp_path / "not" / "yet"
    ex = Executor(output_dir=where)
    try:
        t = ex.submit(TaskSpec(BashRunner("echo hi")))
        assert t.wait(10) and t.output == "hi\n"
    finally:
        ex.shutdown()
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    task_dirs = [p for p in where.iterdir() if p.is_dir()]
    assert task_dirs and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in task_dirs)
