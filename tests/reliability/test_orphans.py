"""Orphan trials: random hard-to-end process trees, ended by cancel, timeout, their own end, the kernel's end.

The normal run does a reduced form (a few seconds). The full form, over
1,000 trials with real Jupyter kernels for the kernel cases::

    TTASKS_RELIABILITY=full .venv/bin/python -m pytest tests/reliability -q -s -p no:cacheprovider -o addopts=""

Each test prints one line: processes recorded, trials, and how many of those
processes were still alive ``grace + 5`` seconds after the end (orphans).
Every count must be 0.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from trees import Census, Tree, random_tree

from ttasks_ipy.core import BashRunner, Executor, TaskSpec

FULL = os.environ.get("TTASKS_RELIABILITY", "") == "full"
GRACE = 0.3
#: trials per engine mode (reduced, full)
ENGINE = {"cancel": (16, 500), "timeout": (8, 300), "end": (8, 100)}
#: (kernels, trees per kernel) per kernel mode, full form only (the reduced form uses a plain engine process)
KERNELS = {"shutdown": (8, 10), "manager-kill": (8, 10), "sigkill": (8, 10)}
CONCURRENT = 12
SEED = int(os.environ.get("TTASKS_RELIABILITY_SEED", "20240611"))

pytestmark = pytest.mark.timeout(3600 if FULL else 120)


def report(mode: str, census: Census, trials: int, orphans: list[int], incomplete: int) -> None:
    line = (f"[reliability] orphans after {mode}: {len(orphans)} of {len(census.known)} processes "
            f"in {trials} trials" + (f" ({incomplete} trees ended before they were complete)" if incomplete else ""))
    print("\n" + line, file=sys.__stdout__, flush=True)


@pytest.fixture
def census():
    c = Census()
    yield c
    c.kill_all()  # a failed trial leaves nothing behind


@pytest.fixture(scope="module")
def ex():
    e = Executor(max_workers=CONCURRENT * 2, grace=GRACE)
    yield e
    e.shutdown()


@pytest.mark.parametrize("mode", sorted(ENGINE))
def test_no_orphan_after_engine_end(ex, census, tmp_path, mode):
    n = ENGINE[mode][1 if FULL else 0]
    rng = random.Random(f"{SEED}-{mode}")
    trees = [random_tree(rng, tmp_path / f"{i}.pids", ends_itself=mode == "end") for i in range(n)]

    def trial(tree: Tree) -> tuple[list[int], bool]:
        spec = TaskSpec(BashRunner(tree.command(), grace=GRACE), timeout=1.5 if mode == "timeout" else None)
        t = ex.submit(spec)
        complete = tree.wait_complete(15)
        census.add(tree.pids())
        if mode == "cancel":
            ex.cancel(t)
        t.wait(30)
        time.sleep(0.05)  # a piece that started during the end records its pid
        pids = tree.pids()
        census.add(pids)
        return census.wait_gone(pids, GRACE + 5), complete

    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(trial, trees))
    orphans = [p for left, _ in results for p in left]
    report(mode, census, n, orphans, sum(not ok for _, ok in results))
    assert orphans == [], f"{len(orphans)} processes outlived their command ({mode})"


# ---- the kernel ends ---------------------------------------------------------------------
ENGINE_PROCESS = """
import json, sys
from ttasks_ipy.core import BashRunner, Executor, TaskSpec
ex = Executor(max_workers=64, grace=float(sys.argv[2]))
for cmd in json.load(open(sys.argv[1])):
    ex.submit(TaskSpec(BashRunner(cmd, grace=float(sys.argv[2]))))
print("submitted", flush=True)
if sys.stdin.readline() == "shutdown\\n":
    ex.shutdown()
"""


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_no_orphan_after_an_engine_process_ends(census, tmp_path, how):
    """A plain process running the engine (what a kernel is, without Jupyter): shut down, or SIGKILLed."""
    rounds, per = (1, 8) if not FULL else (10, 10)
    rng = random.Random(f"{SEED}-process-{how}")
    orphans: list[int] = []
    incomplete = 0
    for r in range(rounds):
        trees = [random_tree(rng, tmp_path / f"{r}-{i}.pids") for i in range(per)]
        cmds = tmp_path / f"{r}.json"
        cmds.write_text(json.dumps([t.command() for t in trees]))
        proc = subprocess.Popen([sys.executable, "-c", ENGINE_PROCESS, str(cmds), str(GRACE)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stdout is not None and proc.stdin is not None
        try:
            assert proc.stdout.readline() == "submitted\n"
            incomplete += sum(not t.wait_complete(15) for t in trees)
            for t in trees:
                census.add(t.pids())
            if how == "sigkill":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.stdin.write("shutdown\n")
                proc.stdin.flush()
            proc.wait(30)
            orphans += census.wait_gone([p for t in trees for p in t.pids()], GRACE + 5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    report(f"engine process {how}", census, rounds * per, orphans, incomplete)
    assert orphans == []


@pytest.mark.skipif(not FULL, reason="full form only (TTASKS_RELIABILITY=full): real kernels take seconds each")
@pytest.mark.parametrize("how", sorted(KERNELS))
def test_no_orphan_after_the_kernel_ends(census, tmp_path, how):
    from conftest import start_kernel, stop_kernel

    kernels, per = KERNELS[how]
    rng = random.Random(f"{SEED}-kernel-{how}")
    orphans: list[int] = []
    incomplete = 0
    for r in range(kernels):
        k = start_kernel()
        try:
            k.run("%config TTasks.max_workers = 64")
            trees = [random_tree(rng, tmp_path / f"{r}-{i}.pids") for i in range(per)]
            for i, t in enumerate(trees):
                script = tmp_path / f"{r}-{i}.sh"
                script.write_text(t.command())
                k.run(f"_h{i} = %bg --quiet !bash {script}")
            incomplete += sum(not t.wait_complete(15) for t in trees)
            for t in trees:
                census.add(t.pids())
            if how == "sigkill":
                os.kill(k.pid, signal.SIGKILL)
            elif how == "manager-kill":  # what a frontend's shutdown does after its wait: SIGKILL to the group
                k.km.shutdown_kernel(now=True)
            else:  # a shutdown request: the kernel exits on its own
                k.kc.stop_channels()
                k.km.shutdown_kernel(now=False)
            orphans += census.wait_gone([p for t in trees for p in t.pids()], 2.0 + 5)
        finally:
            stop_kernel(k)
    report(f"kernel {how}", census, kernels * per, orphans, incomplete)
    assert orphans == []


def test_the_trees_are_what_they_claim(tmp_path):
    """Every piece records as many pids as it says (else the trials would count the wrong processes)."""
    from trees import PIECES

    census = Census()
    ex = Executor(grace=GRACE)
    try:
        for name, (text, n) in sorted(PIECES.items()):
            tree = Tree(f"{text}\necho $$ >> $R\nsleep 300", tmp_path / f"{name}.pids", n + 1, [name])
            t = ex.submit(TaskSpec(BashRunner(tree.command(), grace=GRACE)))
            assert tree.wait_complete(15), f"{name}: {tree.pids()}"
            census.add(tree.pids())
            assert len(census.alive(tree.pids())) == n + 1, name
            ex.cancel(t)
            assert census.wait_gone(tree.pids(), GRACE + 5) == [], name
    finally:
        census.kill_all()
        ex.shutdown()
