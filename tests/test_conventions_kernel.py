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


def _python_block(starting: str) -> str:
    """The README's Python example that starts with ``starting`` (wherever it stands in the README)."""
    return next(b for b in _python_blocks() if b.startswith(starting))


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
    block = _python_block("%load_ext ttasks_ipy\n\n%bg -o r")
    ck.run("def slow_function(n):\n    return n * 2")
    for line in block.splitlines():
        if line.strip():
            ck.run(line, timeout=60)  # any error (a UsageError included) fails the test
    ck.run("%bg --wait all --timeout 30")
    assert ck.value("r.output") == "'hello\\n'"
    assert ck.value("x") == "84"
    assert ck.value("h.status") == "'cancelled'"


def test_readme_background_cells_examples_work_as_typed(ck):
    block = _python_block("%%bg -n prep")
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
    loop = re.search(r"`(for p in range\(4\)):` whose body is `(%bg [^`]*)`", README.read_text())
    ck.run(f"{loop.group(1)}:\n    {loop.group(2)}")
    ck.run("%bg --wait all --timeout 30")
    assert ck.value("r0, r1, r2, r3") == "(0, 10, 20, 30)"


# ---- 2. help -------------------------------------------------------------

def _help(k, code: str) -> str:
    """What IPython's help shows for ``code`` (sent as a pager payload of the reply, or printed)."""
    k.drain_idle(0)
    printed: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append("<<error>> " + msg["content"]["evalue"])

    reply = k.kc.execute_interactive(code, timeout=30, output_hook=hook)
    pages = [p["data"]["text/plain"] for p in reply["content"].get("payload", []) if p.get("source") == "page"]
    return "\n".join(pages + printed)


@pytest.mark.parametrize("code", ["%bg?", "%%bg?"])
def test_bg_help_names_every_option_and_action(ck, code):
    from ttasks_ipy.kernel.magics import ACTION_OPTIONS, DISPATCH_OPTIONS

    shown = _help(ck, code)
    assert "<<error>>" not in shown and "%bg [OPTIONS] [--] BODY" in shown
    for flags, _ in DISPATCH_OPTIONS:
        for flag in flags:
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", shown), flag
    for flag, *_ in ACTION_OPTIONS:
        assert flag in shown
    assert "--tail N" in shown and "%%bg" in shown


def test_bg_double_question_mark_reaches_ipython_help(ck):
    count = "len(__import__('ttasks_ipy').kernel.session().tasks())"
    before = ck.value(count)
    shown = _help(ck, "%bg??")  # IPython's convention: ?? shows the source
    shown = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "<<error>>" not in shown and "def bg(" in shown
    assert ck.value(count) == before  # nothing was dispatched


def test_bgraph_help_names_its_options_and_line_grammar(ck):
    from ttasks_ipy.kernel.graph_magic import GRAPH_OPTIONS

    shown = _help(ck, "%%bgraph?")
    assert "%%bgraph NAME" in shown and "after DEP" in shown and "finally" in shown
    assert "parse the cell" not in shown  # the user's help, not the module's docstring
    for flag, _ in GRAPH_OPTIONS:
        assert flag in shown


def test_a_prompt_ending_in_a_question_mark_is_still_a_prompt(ck):
    ck.run("q = %bg -n q1 -o qa ?Is this a question?\n%bg --wait q1 --timeout 20")
    assert ck.value("qa") == "'Echo: Is this a question?'"


# ---- 3. options that do not apply are refused ------------------------------

def _usage_error(k, code: str) -> str:
    r = k.run(code)  # IPython prints a UsageError as one line on stderr, without a traceback
    assert r.stderr.startswith("UsageError: "), f"{code!r} was accepted: {r.all_text}"
    assert r.stderr.count("\n") == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("%bg --process !echo hi", ["--process", "Python"]),
        ("%%bg --bash --process\necho hi", ["--process", "Python"]),
        ("%bg --model m !echo hi", ["--model", "prompt"]),
        ("%bg --system 'be brief' 1 + 1", ["--system", "prompt"]),
        ("%%bg --model m\nx = 1", ["--model", "prompt"]),
        ('%bg --after "" !echo hi', ["--after", "NAME"]),
        ("%bg --after , !echo hi", ["--after", "NAME"]),
        ("%bg --timeout 1 --timeout 2 !echo hi", ["--timeout", "twice", "1 and 2"]),
        ("%bg -n a --name b !echo hi", ["--name", "twice"]),
        ("%bg --quiet --quiet 1", ["--quiet", "twice"]),
        ("%%bg --timeout=1 --timeout 2\nx = 1", ["--timeout", "twice"]),
        ("%bg --wait a --timeout 1 --timeout 2", ["--timeout", "twice"]),
        ("%bg --log a --tail 1 --tail 2", ["--tail", "twice"]),
        ("%bg --service --stall 5 !sleep 1", ["--stall", "--service", "no stall detection"]),
    ],
)
def test_options_that_do_not_apply_are_refused(ck, code, words):
    count = "len(__import__('ttasks_ipy').kernel.session().tasks())"
    before = ck.value(count)
    msg = _usage_error(ck, code)
    for w in words:
        assert w in msg, msg
    assert ck.value(count) == before  # nothing was dispatched


def test_repeatable_and_fitting_options_still_work(ck):
    ck.run("%bg -n envs -o er --env A=1 --env B=2 !echo $$A$$B\n%bg --wait envs --timeout 10")
    assert ck.value("er.output") == "'12\\n'"


# ---- 4. waiting ---------------------------------------------------------------

def test_log_shows_a_bounded_tail_and_says_what_it_left_out(ck):
    ck.run("%bg -n many !seq 1 500\n%bg --wait many --timeout 20")
    lines = ck.run("%bg --log many").stdout.splitlines()
    assert lines[-1] == "500" and "301" in lines and "300" not in lines
    note = next(x for x in lines if "left out" in x)
    assert "the first 300 lines of stdout left out" in note and "%bg --log many --all" in note
    whole = ck.run("%bg --log many --all").stdout.splitlines()
    assert "1" in whole and whole[-1] == "500" and not any("left out" in x for x in whole)
    assert ck.run("%bg --log many --tail 2").stdout.splitlines()[-2:] == ["499", "500"]
    assert "--tail must be a whole number from 1" in _usage_error(ck, "%bg --log many --tail 0")
    assert "not both" in _usage_error(ck, "%bg --log many --tail 3 --all")
    assert "--all goes with --log" in _usage_error(ck, "%bg --list --all")


def test_log_of_a_graph_shows_each_task_and_the_failed_ones_output(ck):
    r = ck.run("%%bgraph glog\nfirst: !echo fine\nbad after first: !echo went-wrong >&2; exit 3\n"
               "later after bad: !true")
    assert not r.stderr, r.stderr
    assert ck.value("glog.wait(20).ok") == "False"
    out = ck.run("%bg --log glog").stdout
    assert "first" in out and "blocked" in out and "graph glog failed" in out
    assert "[bg] glog.bad: failed (exit status 3)" in out and "went-wrong" in out
    assert "fine" not in out  # the tasks that succeeded are listed, not shown


def test_wait_says_how_each_task_ended_failures_and_timeouts_included(ck):
    r = ck.run("%bg -n oops z = 1 / 0\n%bg -n too_slow --timeout 0.5 !sleep 5\n%bg --wait oops too_slow --timeout 30")
    assert "✗ oops failed" in r.stdout and "ZeroDivisionError" in r.stdout
    assert "✗ too_slow failed" in r.stdout and "timed out" in r.stdout.lower()
    assert r.stdout.count("\n") == 2  # one line each


def test_wait_for_everything_leaves_services_alone(ck):
    ck.run("%bg --wait all --timeout 30")
    ck.run("%bg -n svc --service !sleep 60")
    r = ck.run("%bg -n quick -o qv !sleep 0.3\n%bg --wait --timeout 20", timeout=30)
    assert "quick finished" in r.stdout and r.duration < 10
    r = ck.run("%bg --wait --timeout 20", timeout=30)
    assert r.stdout.startswith("[bg] nothing to wait for") and "services" in r.stdout and r.duration < 10
    ck.run("%bg --cancel svc")
    r = ck.run("%bg --wait all")
    assert r.stdout.strip() == "[bg] nothing to wait for"


def test_many_tasks_ending_together_give_one_line_and_quiet_ones_only_their_failures(ck):
    ck.run("import threading, time, ttasks_ipy\ngate, gate2 = threading.Event(), threading.Event()")
    r = ck.run("for i in range(30):\n"
               "    get_ipython().run_line_magic('bg', f'-n w{i} w{i} = (gate.wait(20), {i})[1]')\n"
               "%bg -n a ya = (gate.wait(20), 1 / 0)\n%bg -n b yb = (gate.wait(20), 1 / 0)\n"
               "%bg --quiet -n q1 qv = (gate.wait(20), 5)[1]\n%bg --quiet -n qf qz = (gate.wait(20), 1 / 0)")
    assert len(r.texts) == 32 and not r.stdout, r  # a start line each, the quiet ones none
    # they all end while this cell runs: its end says them in one line
    r = ck.run("gate.set()\nnames = [f'w{i}' for i in range(30)] + ['a', 'b', 'q1', 'qf']\n"
               "deadline = time.monotonic() + 20\n"
               "while not all(ttasks_ipy.task(n).done() for n in names) and time.monotonic() < deadline:\n"
               "    time.sleep(0.02)")
    assert r.stdout == "[bg] ✓ 30 finished → w0 … w29 · ✗ 3 failed: a, b, qf (%bg --log a)\n"
    assert ck.value("(w29, qv, 'qz' in dir())") == "(29, 5, False)"
    # alone, a quiet task that went well says nothing, and one that failed says it in full
    ck.run("%bg --quiet -n q2 qv2 = (gate.wait(20), 7)[1]\n%bg --wait q2 --timeout 20")
    assert ck.value("qv2") == "7"
    ck.run("%bg --quiet -n q3 q3v = gate2.wait(20)\n%bg --quiet -n q4 q4v = (gate2.wait(20), 1 / 0)")
    r = ck.run("gate2.set()\ndeadline = time.monotonic() + 20\n"
               "while not ttasks_ipy.task('q4').done() and time.monotonic() < deadline:\n"
               "    time.sleep(0.02)")
    assert r.stdout.startswith("[bg] ✗ q4 failed after") and "ZeroDivisionError" in r.stdout, r.stdout
    assert r.stdout.count("\n") == 1


# ---- 7. the small things ------------------------------------------------------

def test_a_name_in_use_names_the_option_that_replaces_it(ck):
    ck.run("%bg -n busy !sleep 30")
    msg = _usage_error(ck, "%bg -n busy !true")
    assert "a task named 'busy' is running" in msg and "--replace" in msg
    r = ck.run("%bg -n busy --replace !true\n%bg --wait busy --timeout 10")
    assert "✓ busy finished" in r.stdout


def test_list_and_text_dashboard_show_targets_in_one_order_with_wide_names_aligned(ck):
    ck.run("%bg --wait all --timeout 30")
    ck.run("%bg -n 数据 -o r1 !echo 中文\n%bg -n plain -o r2 !echo x\n%bg --wait 数据 plain --timeout 10")
    listing = ck.run("%bg --list").stdout.splitlines()
    board = ck.run("%bg --dashboard").stdout.splitlines()
    assert listing == board
    wide = next(x for x in listing if "数据 → r1" in x)
    plain = next(x for x in listing if "plain → r2" in x)
    from wcwidth import wcswidth
    # the kind column starts at the same screen column in both rows
    assert wcswidth(wide[: wide.index("bash")]) == wcswidth(plain[: plain.index("bash")])
    assert listing.index(wide) < listing.index(plain)  # dispatch order


def test_a_cancel_reads_once_and_a_log_header_does_not_repeat_its_status(ck):
    r = ck.run("%bg -n stop_me !sleep 30\n%bg --cancel stop_me\n%bg --wait stop_me --timeout 10")
    assert "⊘ stop_me cancelled by user after" in r.stdout and "(cancelled" not in r.stdout
    assert ck.run("%bg --log stop_me").stdout.splitlines()[0] == "[bg] stop_me: cancelled by user"
    ck.run("%bg -n fine !true\n%bg --wait fine --timeout 10")
    assert ck.run("%bg --log fine").stdout.splitlines()[0] == "[bg] fine: succeeded"


def test_a_bash_cell_start_line_keeps_its_line_breaks_readable_and_graphs_show_one_prefix(ck):
    r = ck.run("%%bg --bash -n script\nfor i in 1 2; do\n  echo $i\ndone")
    assert "[bg] script started (bash): !for i in 1 2; do ⏎ echo $i ⏎ done" in r.texts[0], r.texts
    ck.run("%%bgraph gshow\none: !true")
    ck.value("gshow.wait(10).ok")
    shown = ck.run("gshow").texts
    assert shown and shown[-1].startswith("[bg] ✓ graph gshow finished") and shown[-1].count("[bg]") == 1


def test_a_statement_dependency_that_assigns_one_name_gives_its_value(ck):
    r = ck.run("%%bgraph deps\nsrc: data = [1, 2, 3]\npair: a, b = 1, 2\n"
               "use after src, pair: total = (sum(upstream.src.value), upstream.pair.value['b'])")
    assert not r.stderr, r.stderr
    ck.value("deps.wait(10).ok")
    assert ck.value("total") == "(6, 2)"


def test_a_graph_or_task_notice_is_not_repeated_by_its_handle_in_the_same_cell(ck):
    ck.run("%%bgraph gonce\nstep: !sleep 0.2")
    r = ck.run("gonce.wait(10)")  # the handle shows the notice; the cell's end does not say it again
    assert r.all_text.count("graph gonce finished") == 1, r.all_text
    r = ck.run("%bg --wait gonce\ngonce")
    assert r.all_text.count("graph gonce finished") == 1, r.all_text
    ck.run("ht = %bg -n tonce !sleep 0.2")
    r = ck.run("%bg --wait tonce --timeout 10\nht")
    # said once by the wait; its line in the cell above is updated in place; the handle adds nothing
    assert r.stdout.count("tonce") == 1, r.stdout
    assert not [m for m in r.messages if m["msg_type"] in ("execute_result", "display_data")], r.messages
