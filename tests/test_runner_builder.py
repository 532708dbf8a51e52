"""``syntax.runners``: one builder makes a body, its place and its pieces a runner (real runners, real hooks)."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttasks_ipy.core import (
    BashRunner,
    Executor,
    PortablePython,
    PromptRunner,
    PythonRunner,
    Runner,
    SpecError,
    TaskSpec,
    compile_body,
)
from ttasks_ipy.core.backends.process.backend import ProcessBackend
from ttasks_ipy.core.backends.process.pool import WorkerPool
from ttasks_ipy.core.ledger.detached import DetachedRunner
from ttasks_ipy.core.runners.prompt import PromptSettings
from ttasks_ipy.syntax.runners import PLACES, RunnerHooks, command_cwd, command_env, elsewhere, make_runner

pytestmark = pytest.mark.timeout(60)

GRACE = 0.5


def answer(prompt: str, **options: Any) -> str:
    """The LLM of these tests (``TTasks.llm_callable``-style): says what it was asked, and how."""
    return f"{prompt} / model={options.get('model')} system={options.get('system')}"


class Hooks:
    """What a session gives the builder, for an executor of the tests' own."""

    def __init__(self, ex: Executor, folder: Path) -> None:
        self.ex = ex
        self.folder = folder
        self.pool: WorkerPool | None = None
        self.detached: list[tuple[str, dict[str, str], str | None]] = []

    def prompt_settings(self) -> PromptSettings:
        return PromptSettings(callable=f"{__name__}:answer", model="m0")

    def worker_pool(self) -> WorkerPool:
        if self.pool is None:
            self.pool = WorkerPool(1, grace=GRACE, reaper=self.ex.reaper, timers=self.ex.timers)
            self.ex.add_backend(ProcessBackend(self.pool))
        return self.pool

    def detached_runner(self, command: str, env: dict[str, str], cwd: str | None) -> Runner:
        self.detached.append((command, env, cwd))

        def folder_for(tid: int) -> Path:
            path = self.folder / str(tid)
            path.mkdir(parents=True, exist_ok=True)
            return path

        return DetachedRunner(command, env=env, cwd=cwd, grace=GRACE, folder_for=folder_for)


@pytest.fixture
def ex() -> Iterator[Executor]:
    e = Executor(max_workers=2, grace=GRACE)
    yield e
    e.shutdown()


@pytest.fixture
def hooks(ex: Executor, tmp_path: Path) -> Iterator[Hooks]:
    h = Hooks(ex, tmp_path / "detached")
    yield h
    if h.pool is not None:
        h.pool.shutdown()


def run(ex: Executor, runner: Runner, backend: str = "thread") -> Any:
    task = ex.submit(TaskSpec(runner, backend=backend)).wait(30)
    assert task.status == "succeeded", (task.status, task.error)
    return task.result


def test_the_session_and_the_hooks_of_the_tests_are_runner_hooks(hooks: Hooks) -> None:
    from ttasks_ipy.kernel.session import Session

    assert isinstance(hooks, RunnerHooks)
    assert issubclass(Session, RunnerHooks)


def test_a_command_here_gets_its_env_cwd_and_grace(ex: Executor, tmp_path: Path) -> None:
    runner = make_runner("bash", 'echo "$GREETING from $(pwd)"', env={"GREETING": "hello"}, cwd=str(tmp_path),
                         grace=GRACE)
    assert isinstance(runner, BashRunner) and runner.needs_worker_slot and runner.grace == GRACE
    assert run(ex, runner).output == f"hello from {tmp_path}\n"


def test_a_command_for_a_cluster_takes_no_local_slot() -> None:
    runner = make_runner("bash", "echo hi", "dask")
    assert isinstance(runner, BashRunner) and runner.kind == "bash"
    assert runner.needs_worker_slot is False


def test_python_here_reads_the_namespace_and_keeps_its_writes(ex: Executor) -> None:
    ns = {"x": 20}
    body = compile_body("y = x + 1", "<builder-1>")
    runner = make_runner("python", body, namespace=ns)
    assert isinstance(runner, PythonRunner)
    assert run(ex, runner) == {"y": 21}
    assert "y" not in ns  # delivery writes the namespace, not the task


def test_python_with_names_bound_before(ex: Executor) -> None:
    body = compile_body("x * 2", "<builder-2>")
    assert run(ex, make_runner("python", body, namespace={"x": 1}, bound={"x": 5})) == 10


def test_python_in_a_worker_process_starts_the_workers(ex: Executor, hooks: Hooks) -> None:
    body = compile_body("import os\npid = os.getpid()\nv = k + 1", "<builder-3>", first_line=2)
    runner = make_runner("python", body, "process", hooks=hooks, namespace={"k": 1}, first_line=2)
    assert isinstance(runner, PortablePython) and runner.first_line == 2 and runner.needs_worker_slot
    assert hooks.pool is not None  # started when the runner was made: the task can go at once
    result = run(ex, runner, "process")
    assert result["v"] == 2 and result["pid"] != os.getpid()


def test_python_for_a_cluster_is_portable_and_checked_now() -> None:
    body = compile_body("k + 1", "<builder-4>")
    runner = make_runner("python", body, "dask", namespace={"k": 1})
    assert isinstance(runner, PortablePython) and runner.needs_worker_slot is False
    with pytest.raises(SpecError, match="cannot send 'lock' to a worker process"):
        body = compile_body("lock.locked()", "<builder-5>")
        make_runner("python", body, "dask", namespace={"lock": threading.Lock()})


def test_a_prompt_gets_the_settings_of_the_hooks_and_its_overrides(ex: Executor, hooks: Hooks) -> None:
    runner = make_runner("prompt", "2 + 2?", hooks=hooks, model="m1", system="be brief")
    assert isinstance(runner, PromptRunner)
    assert run(ex, runner) == "2 + 2? / model=m1 system=be brief"
    assert run(ex, make_runner("prompt", "again", hooks=hooks)) == "again / model=m0 system=None"


def test_a_detached_command_is_the_hooks_runner(ex: Executor, hooks: Hooks, tmp_path: Path) -> None:
    runner = make_runner("bash", "echo $WHO away", "detached", hooks=hooks, env={"WHO": "me"}, cwd=str(tmp_path))
    assert isinstance(runner, DetachedRunner)
    assert hooks.detached == [("echo $WHO away", {"WHO": "me"}, str(tmp_path))]
    assert run(ex, runner).returncode == 0


@pytest.mark.parametrize(("kind", "body", "place", "message"), [
    ("prompt", "hi", "dask", "a prompt body does not run at 'dask' (it runs at: thread)"),
    ("bash", "true", "process", "a bash body does not run at 'process' (it runs at: thread, dask, detached)"),
    ("python", "1", "detached", "a python body does not run at 'detached'"),
    ("python", "1", "thread", "a Python body is compiled first (compile_body), not str"),
])
def test_a_body_that_cannot_run_there_is_refused(kind: Any, body: str, place: Any, message: str) -> None:
    with pytest.raises(SpecError) as e:
        make_runner(kind, body, place)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("kind", "place", "what"), [
    ("prompt", "thread", "a prompt"),
    ("python", "process", "a Python body in a worker process"),
    ("bash", "detached", "a detached command"),
])
def test_without_hooks_what_needs_the_kernel_is_refused(kind: Any, place: Any, what: str) -> None:
    body = compile_body("1", "<builder-6>") if kind == "python" else "true"
    with pytest.raises(SpecError, match=f"^{what} needs the kernel's session"):
        make_runner(kind, body, place)


def test_every_place_of_every_kind_builds(hooks: Hooks) -> None:
    for kind, places in PLACES.items():
        for place in places:
            body = compile_body("1", "<builder-7>") if kind == "python" else "true"
            assert make_runner(kind, body, place, hooks=hooks).kind == kind  # type: ignore[arg-type]


def test_elsewhere_marks_and_returns_the_runner() -> None:
    runner = BashRunner("true")
    assert elsewhere(runner) is runner and runner.needs_worker_slot is False


def test_command_env_evaluates_in_the_namespace() -> None:
    assert command_env(["A=x + 1", "B='b'"], {"x": 1}) == {"A": "2", "B": "b"}
    assert command_env([], {}) == {}
    with pytest.raises(SpecError, match=r"^--env '1=2': write NAME=expression$"):
        command_env(["1=2"], {})
    with pytest.raises(SpecError, match=r"^--env A=nope: NameError: name 'nope' is not defined$"):
        command_env(["A=nope"], {})


def test_command_cwd_expands_and_checks(tmp_path: Path) -> None:
    assert command_cwd(None, {}) is None
    assert command_cwd("{d}", {"d": str(tmp_path)}) == str(tmp_path)
    assert command_cwd("~", {}) == os.path.expanduser("~")
    with pytest.raises(SpecError, match=r"^--cwd '/no/such/dir' is not a directory$"):
        command_cwd("/no/such/dir", {})
