"""Lines as people type them, help, refusals, waiting, logs, notices: the IPython conventions, in a real kernel."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import start_kernel, stop_kernel
from llm_server import FakeLLM

from ttasks_ipy.syntax.comments import strip_comment

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as srv:
        yield srv


@pytest.fixture(scope="module")
def ck(llm, tmp_path_factory):
    """A kernel with an LLM endpoint, working in an empty folder (README examples run real commands)."""
    k = start_kernel(env={"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "echo"})
    folder = tmp_path_factory.mktemp("readme")
    (folder / "train.py").write_text("import time\ntime.sleep(30)\n")
    k.run(f"import os\nos.chdir({str(folder)!r})")
    yield k
    stop_kernel(k)


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


# ---- 1. lines as people type them ---------------------------------------

@pytest.mark.parametrize(
    ("line", "stripped"),
    [
        ("--list  # what runs", "--list"),
        ("# only a comment", ""),
        ("--wait a b --timeout 5 # bounded", "--wait a b --timeout 5"),
        ("-n x --ready '#ready' # c", "-n x --ready '#ready'"),
        ('--ready "a \\" # b" # c', '--ready "a \\" # b"'),
        ("--model echo#v2", "--model echo#v2"),
        ("--ready \\#x", "--ready \\#x"),
        ("--ready 'open # quote", "--ready 'open # quote"),
    ],
)
def test_strip_comment(line, stripped):
    assert strip_comment(line) == stripped


def test_trailing_comments_on_action_lines(ck):
    ck.run("h1 = %bg --quiet -n c1 !sleep 30\nh2 = %bg --quiet -n c2 -o v2 1 + 1")
    r = ck.run("%bg --list  # id, name, kind, status")
    assert "c1" in r.stdout and "#" not in r.stdout
    r = ck.run("%bg --wait c2 --timeout 5 # bounded")
    assert "c2" in r.stdout and ck.value("v2") == "2"
    r = ck.run("%bg --log c2 --tail 5   # output")
    assert "c2: succeeded" in r.stdout
    r = ck.run("%bg --cancel c1  # ends the tree")
    assert "cancelled: c1" in r.stdout


def test_trailing_comment_on_cell_first_lines(ck):
    ck.run("%%bg -n cell1 --timeout 30   # the whole cell runs in the background\nzz = 6 * 7")
    ck.run("%bg --wait cell1 --timeout 10")
    assert ck.value("zz") == "42"
    ck.run("%%bgraph g1 --timeout 30  # a two-task graph\na: aa = 1\nb after a: bb = 2")
    assert ck.value("g1.wait(20).ok") == "True"
    assert ck.value("bb") == "2"


def test_hash_in_quotes_on_a_cell_first_line_is_text(ck):
    ck.run("%%bg -n cell2 -o got --model echo --prompt --system '# not a comment'\nhello")
    ck.run("%bg --wait cell2 --timeout 10")
    assert ck.value("cell2.spec.runner.system") == "'# not a comment'"


def test_readme_top_example_lines_work_as_typed(ck):
    block = _python_blocks()[0]
    ck.run("def slow_function(n):\n    return n * 2")
    for line in block.splitlines():
        if line.strip():
            ck.run(line, timeout=60)  # any error (a UsageError included) fails the test
    ck.run("%bg --wait all --timeout 30")
    assert ck.value("r.output") == "'hello\\n'"
    assert ck.value("x") == "84"
    assert ck.value("h.status") == "'cancelled'"


def test_readme_background_cells_examples_work_as_typed(ck):
    block = _python_blocks()[1]
    ck.run(
        "class Frame(list):\n    def describe(self):\n        return 'described'\n"
        "def load_big_csv(path):\n    return Frame([path])\n"
        "def heavy(v):\n    return v + 1\n"
        "y = 41\n"
        "def summarize(upstream):\n    return 'summary'\n"
    )
    for cell in re.split(r"\n\s*\n", block.strip()):
        if cell.startswith("%%"):
            ck.run(cell, timeout=60)
        else:
            for line in cell.splitlines():
                ck.run(line, timeout=60)
    ck.run("%bg --wait prep capital --timeout 30")
    ck.run("%bg --wait all --timeout 60")
    assert ck.value("summary") == "'described'"
    assert ck.value("x") == "42"
    assert ck.value("capital.startswith('Echo: What is the capital of France?')") == "True"
    assert ck.value("pipeline.wait(60).done(), pipeline.report.status") == "(True, 'succeeded')"


def test_readme_reference_loop_binds_at_dispatch(ck):
    # IPython expands a magic only at the start of a line: the loop's body goes on a line of its own
    loop = re.search(r"`(for p in range\(4\)): (%bg [^`]*)`", README.read_text())
    ck.run(f"{loop.group(1)}:\n    {loop.group(2)}")
    ck.run("%bg --wait all --timeout 30")
    assert ck.value("r0, r1, r2, r3") == "(0, 10, 20, 30)"
