"""``%%bgraph`` cell bodies: the task-line grammar, every bad input, and bodies that run for real."""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ttasks_ipy.core import Executor, SpecError
from ttasks_ipy.core.context import TaskContext
from ttasks_ipy.core.graph import GraphRun
from ttasks_ipy.core.spec import Runner
from ttasks_ipy.syntax.graph import TaskLine, build_nodes, compile_graph, parse_graph

pytestmark = pytest.mark.timeout(60)

EXAMPLE = """\
# NAME [after DEP, DEP] [finally] [optional] [timeout=S] [retries=N] [stall=S] [process] [model=M]: BODY
build: !make build
lint: !ruff check .

test after build timeout=600 retries=2 stall=30: !pytest -q
report after lint, test finally: summarize(upstream)
advice after report finally optional model=llama3:8b: ?Suggest the next step given this report: {upstream.report.value}
"""


@pytest.fixture
def ex() -> Iterator[Executor]:
    e = Executor(max_workers=4, grace=0.5)
    yield e
    e.shutdown()


def run_graph(ex: Executor, cell: str, ns: dict[str, Any] | None = None, **kw: Any) -> GraphRun:
    nodes = compile_graph("g", cell, ns if ns is not None else {}, grace=0.5, **kw)
    return GraphRun(ex, "g", nodes).start().wait(20)


# ---- the grammar -------------------------------------------------------------------
def test_the_issue_example_parses() -> None:
    tasks = {t.name: t for t in parse_graph(EXAMPLE)}
    assert list(tasks) == ["build", "lint", "test", "report", "advice"]
    assert tasks["build"] == TaskLine("build", "bash", "make build", line=3, body_line=3)
    t = tasks["test"]
    assert (t.deps, t.timeout, t.retries, t.stall, t.line) == (("build",), 600.0, 2, 30.0, 6)
    r = tasks["report"]
    assert (r.kind, r.body, r.deps, r.finally_, r.optional) == ("python", "summarize(upstream)", ("lint", "test"),
                                                                True, False)
    a = tasks["advice"]
    assert (a.kind, a.model, a.finally_, a.optional) == ("prompt", "llama3:8b", True, True)
    assert a.body == "Suggest the next step given this report: {upstream.report.value}"


def test_continuation_lines_comments_and_blank_lines() -> None:
    cell = """\
# a comment before everything

prep:
    import math
    # this comment is part of the body
    def area(r):
        return math.pi * r * r

    big = area(10)
# at task indentation: ignored
script after prep: !
    set -e
    echo "${HOME:-none}" | awk '{print $1}'
inline: !echo one
    echo two
"""
    prep, script, inline = parse_graph(cell, first_line=5)
    assert prep.body == (
        "import math\n# this comment is part of the body\ndef area(r):\n    return math.pi * r * r\n\nbig = area(10)"
    )
    assert (prep.line, prep.body_line, prep.multiline) == (7, 8, True)
    assert script.kind == "bash" and script.body == "set -e\necho \"${HOME:-none}\" | awk '{print $1}'"
    assert (script.line, script.body_line) == (15, 16)
    assert inline.body == "echo one\necho two" and inline.multiline


def test_indented_task_lines_and_a_comment_inside_a_body() -> None:
    cell = "    a: !echo 1\n        echo 2\n    # ignored\n        echo 3\n    b after a: x = 1\n"
    a, b = parse_graph(cell)
    assert a.body == "echo 1\necho 2\n\necho 3"  # the comment line kept as a blank, so lines keep their numbers
    assert b.deps == ("a",)


def test_marker_on_the_first_body_line() -> None:
    (t,) = parse_graph("deploy:\n    !set -e\n    echo done\n")
    assert (t.kind, t.body, t.body_line) == ("bash", "set -e\necho done", 3)


# ---- every bad input: one line, the cell line, what is right -------------------------
BAD = [
    ("a after b: 1\nb after a: 2", "dependency cycle: a -> b -> a (lines 2, 3)"),
    ("a after a: 1", "dependency cycle: a -> a (line 2)"),
    ("build: 1\ntest after bild: 2", "line 3: task test runs after 'bild', which is not a task of this graph: "
                                     "did you mean 'build'?"),
    ("a: 1\nb: 2\na: 3", "line 4: duplicate task name a (first on line 2)"),
    ("a optional: 1", "line 2: task a is optional but not finally"),
    ("a:", "line 2: task a has an empty body"),
    ("a:\n\n# nothing\nb: 1", "line 2: task a has an empty body"),
    ("a: !", "line 2: task a has an empty command after '!'"),
    ("a: ?  ", "line 2: task a has an empty prompt after '?'"),
    ("a fnally: 1", "line 2: unknown option word 'fnally' in the header of task a: did you mean 'finally'?"),
    ("a retry=2: 1", "unknown option word 'retry' in the header of task a: did you mean 'retries'?"),
    ("a banana: 1", "unknown option word 'banana' in the header of task a (options: after, finally"),
    ("a timeout=abc: 1",
     "line 2: timeout=abc: timeout must be a positive number of seconds (like 30 or 1.5; at most a year), "
     "not 'abc' (task a)"),
    ("a timeout=-5: 1", "timeout=-5: timeout must be a positive number"),
    ("a timeout=inf: 1", "timeout=inf: timeout must be a positive number"),
    ("a stall=0: 1", "stall=0: stall must be a positive number"),
    ("a retries=1.5: 1", "retries=1.5: retries must be a whole number from 0 to 1000"),
    ("a retries=²: 1", "retries=²: retries must be a whole number from 0 to 1000"),
    ("a timeout=1e300: 1", "timeout=1e300: timeout must be a positive number of seconds"),
    ("a timeout 5: 1", "timeout takes a value: write timeout=N"),
    ("a finally=yes: 1", "finally takes no value"),
    ("a model=: ?hi", "model= needs a model name"),
    ("a timeout=1 timeout=2: 1", "timeout is given twice for task a"),
    ("b: 1\nc: 1\na after b after c: 1", "line 4: after is given twice for task a: list every dependency"),
    ("a after: 1", "'after' needs task names separated by commas"),
    ("a after b,: 1", "'after' needs task names separated by commas"),
    ("a model=m: 1", "model= goes with a prompt body"),
    ("a process: !echo", "process runs Python bodies"),
    ("x = 1", "line 2: unexpected '=' in the header of task x: a task line reads NAME [after DEP"),
    ("print('hi')", "line 2: unexpected '(' in the header of task print"),
    ("build !make", "line 2: unexpected '!' in the header of task build"),
    ("a: 1\nlonely", "line 3: no ':' after the header of task lonely"),
    ("!echo hi", "line 2: a task line starts with the task's name"),
    ("1abc: 1", "line 2: cannot read '1abc: 1'"),
    ("class: 1", "line 2: task name 'class' is not usable"),
    ("wait: 1", "line 2: task name wait is taken by the graph handle"),
    ("    x: 1", None),  # all indented alike: fine
    ("  a: 1\nb: 2", "line 3: less indented than the first task line"),
    ("    # c\n  x\nb: 1", "line 3: no ':' after the header of task x"),
    ("a: 1\n    b\n  c: 2", "line 3: syntax error in task a: unexpected indent"),
    ("a: for i in range(3):\n    print(i)", "(a block starts on the line after the colon)"),
    ("a:\n    x = (\n", "line 3: syntax error in task a: '(' was never closed"),
    ("a: !echo {1..3}", None),  # fields that are not Python, or read no defined name, are the shell's
    ("a: !echo } {x {} $HOME {nosuch}", None),
    ("a: ?Reply as {\"k\": 1} about {topic}", None),
    ("b: 1\na after b: !echo {upstream.c.value}", "line 3: task a reads upstream.c, but it runs after b: "
                                                  "add it with 'after c'"),
    ("b: 1\na after b: ?Tell me {upstream.bb.value}", "task a reads upstream.bb, but it runs after b: "
                                                      "did you mean upstream.b?"),
    ("b: 1\na after b:\n    x = 1\n    y = upstream['c']", "line 5: task a reads upstream.c"),
    ("b: 1\na after b: !echo { x; {upstream.c.value}; }", "line 3: task a reads upstream.c, but it runs after b"),
    ("a: ?hello", "line 2: task a: prompt tasks (?) need an LLM backend"),
    ("a process: 1", "line 2: task a: process needs worker processes"),
    ("", "the graph has no tasks"),
    ("# only a comment\n\n", "the graph has no tasks"),
]


@pytest.mark.parametrize(("cell", "message"), BAD, ids=[repr(c)[:40] for c, _ in BAD])
def test_bad_input_is_one_line_naming_the_problem(cell: str, message: str | None) -> None:
    if message is None:
        compile_graph("g", cell, {}, make_prompt=_EchoPrompt)
        return
    with pytest.raises(SpecError) as e:
        compile_graph("g", cell, {"known": 1})
    text = str(e.value)
    assert "\n" not in text
    assert message in text


def test_bad_graph_name() -> None:
    with pytest.raises(SpecError, match="graph name 'my graph' is not usable"):
        compile_graph("my graph", "a: 1", {})


# ---- bodies that run ------------------------------------------------------------------
def test_upstream_values_reach_python_and_bash_bodies(ex: Executor, tmp_path: Path) -> None:
    cell = f"""\
build: !echo built-ok
numbers: [3, 4]
evil: "x; touch {tmp_path}/pwned"
stats after numbers:
    total = sum(upstream.numbers.value)
    squares = [n * n for n in upstream["numbers"].value]
shout after build, stats: !echo {{upstream.build.output.strip().upper()}} {{upstream.stats.value['total']}}
quoted after evil: !printf '%s|' {{upstream.evil.value}} "{{upstream.evil.value}}" '{{upstream.evil.value}}'
spread after numbers: !printf '<%s>' {{upstream.numbers.value}}
"""
    g = run_graph(ex, cell)
    assert g.ok, g.error
    assert g.stats.result == {"total": 7, "squares": [9, 16]}
    assert g.shout.result.output == "BUILT-OK 7\n"
    evil = f"x; touch {tmp_path}/pwned"
    assert g.quoted.result.output == f"{evil}|{evil}|{evil}|"
    assert not (tmp_path / "pwned").exists()
    assert g.spread.result.output == "<3><4>"


def test_upstream_output_in_a_command_drops_trailing_newlines_as_command_substitution_does(ex: Executor) -> None:
    cell = """\
lines: !printf 'one\\ntwo\\n\\n'
quoted after lines: !printf '[%s]' "{upstream.lines.output}"
"""
    g = run_graph(ex, cell)
    assert g.ok, g.error
    assert g.lines.result.output == "one\ntwo\n\n"  # the task's own output is kept whole
    assert g.quoted.result.output == "[one\ntwo]"


def test_names_are_bound_at_dispatch_and_dollar_names_expand(ex: Executor) -> None:
    ns: dict[str, Any] = {"x": 1, "label": "a b"}
    nodes = compile_graph("g", "read: x * 10\nsay: !printf '[%s]' $label \"$$NOT_SET_HERE\"", ns)
    ns["x"] = 2  # changed after dispatch: the task keeps what it read
    g = GraphRun(ex, "g", nodes).start().wait(10)
    assert g.read.result == 10
    assert g.say.result.output == "[a b][]"


def test_multiline_bash_is_passed_as_written(ex: Executor) -> None:
    cell = """\
script:
    !set -e
    word=hello
    echo "${word}" | awk '{print toupper($1)}'
    for i in {1..3}; do printf "$i"; done
"""
    g = run_graph(ex, cell)
    assert g.ok, g.error
    assert g.script.result.output == "HELLO\n123"


def test_multiline_python_with_functions_and_comprehensions(ex: Executor) -> None:
    cell = """\
prep:
    base = 3
    def scale(v):
        return v * base

    # comprehensions see the body's own names
    values = [scale(i) for i in range(3)]
use after prep: sum(upstream.prep.value["values"]) + offset
"""
    g = run_graph(ex, cell, {"offset": 100})
    assert g.ok, g.error
    assert g.prep.result["values"] == [0, 3, 6]
    assert g.use.result == 109


def test_python_traceback_shows_cell_lines(ex: Executor) -> None:
    cell = "one: 1\nboom after one:\n    x = 1\n    y = x / 0\n"
    g = run_graph(ex, cell)
    assert g.boom.status == "failed" and "ZeroDivisionError" in g.boom.error
    assert re.search(r'File "<bgraph g.boom>", line 5', g.boom.traceback or "")


def test_a_failing_expansion_fails_only_its_task(ex: Executor) -> None:
    g = run_graph(ex, "a: 1\nb after a: !echo {upstream.a.value.nope}\nc after b: 1\n")
    assert (g.a.status, g.b.status, g.c.status) == ("succeeded", "failed", "blocked")
    assert "nope" in g.b.error


class _EchoPrompt(Runner):
    """Stands in for an LLM: answers with the expanded prompt."""

    kind = "prompt"

    def __init__(self, text: Any, model: str | None) -> None:
        self.text, self.model = text, model

    def run(self, ctx: TaskContext) -> str:
        answer = f"[{self.model}] " + self.text.render()
        ctx.output("stdout", answer)
        return answer


def test_prompt_bodies_expand_upstream_at_run_time(ex: Executor) -> None:
    cell = (
        "report: 'all green'\n"
        "advice after report finally optional model=m1:8b: ?Next step for {upstream.report.value}?"
    )
    g = run_graph(ex, cell, make_prompt=_EchoPrompt)
    assert g.ok
    assert g.advice.kind == "prompt"
    assert g.advice.result == "[m1:8b] Next step for all green?"


def test_process_bodies_run_in_a_worker_process(ex: Executor) -> None:
    from ttasks_ipy.core.backends.process.backend import ProcessBackend
    from ttasks_ipy.core.backends.process.pool import WorkerPool
    from ttasks_ipy.core.runners.portable import PortablePython

    pool = WorkerPool(1, grace=0.5, reaper=ex.reaper, timers=ex.timers)

    ex.add_backend(ProcessBackend(pool))
    try:
        def make_process(body: Any, bound: Mapping[str, Any], first_line: int) -> Runner:
            return PortablePython(body, bound, first_line=first_line)

        cell = (
            "first: 20\n"
            "second after first process:\n    import os\n    pid = os.getpid()\n    v = upstream.first.value + k\n"
        )
        g = run_graph(ex, cell, {"k": 1}, make_process=make_process)
        assert g.ok, g.error
        import os

        assert g.second.result["v"] == 21 and g.second.result["pid"] != os.getpid()
        import threading

        with pytest.raises(SpecError, match="line 2: task bad: cannot send 'lock' to a worker process"):
            compile_graph("g", "bad process: lock.locked()", {"lock": threading.Lock()}, make_process=make_process)
    finally:
        pool.shutdown()


def test_build_nodes_keeps_what_delivery_needs() -> None:
    nodes = build_nodes(parse_graph("a: x = 1\nb: 1 + 1\nc: !echo hi\nd:\n    y = 2\n    z = 3"), {}, graph="g")
    meta = {n.name: dict(n.meta) for n in nodes}
    assert meta["a"]["assigns"] == ["x"] and meta["a"]["expression"] is False
    assert meta["b"]["expression"] is True
    assert meta["c"] == {"source": "!echo hi", "line": 4}
    assert meta["d"]["assigns"] == ["y", "z"]
    assert [n.kind for n in nodes] == ["python", "python", "bash", "python"]
    assert nodes[3].describe == "y = 2 …"


def test_prompt_and_process_factories_are_checked_at_dispatch() -> None:
    def no_backend(text: Any, model: str | None) -> Runner:
        raise SpecError("no LLM backend: set TTasks.llm_base_url")

    with pytest.raises(SpecError, match="line 2: task a: no LLM backend: set TTasks.llm_base_url"):
        compile_graph("g", "a: ?hello", {}, make_prompt=no_backend)

    def unpicklable(body: Any, bound: Mapping[str, Any], first_line: int) -> Runner:
        raise SpecError("cannot send 'lock' to a worker process")

    with pytest.raises(SpecError, match="line 3: task b: cannot send 'lock'"):
        compile_graph("g", "a: 1\nb process: lock", {"lock": object()}, make_process=unpicklable)
