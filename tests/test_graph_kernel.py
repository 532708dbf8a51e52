"""``%%bgraph`` from the user's side: cells in a real kernel (jupyter_client)."""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

# the magic class registers %%bgraph itself once it does; until then the test registers it
SETUP = """\
from ttasks_ipy.kernel.extension import session as _tt_session
from ttasks_ipy.kernel import graph_magic as _tt_gm
_ip = get_ipython()
if 'bgraph' not in _ip.magics_manager.magics['cell']:
    _ip.register_magic_function(_tt_gm.magic_for(_tt_session(_ip)), 'cell', 'bgraph')
"""


@pytest.fixture(scope="module", autouse=True)
def _bgraph(kernel):
    kernel.run(SETUP)


def usage_error(r) -> str:
    """The one-line UsageError a cell showed (IPython prints it on stderr, no traceback)."""
    assert r.error is None or r.error["ename"] == "UsageError"
    err = r.stderr.strip()
    assert err.startswith("UsageError: %%bgraph") and "\n" not in err, err
    return err


def test_cell_returns_at_once_and_binds_the_handle(kernel):
    r = kernel.run("%%bgraph slowpipe --timeout 60 --max-parallel 2\nslow: !sleep 5\nnext after slow: !echo done\n")
    assert r.duration < 1.0
    assert r.texts == ["[bg] graph slowpipe started: 2 tasks (slow, next), timeout 60s, at most 2 at once"]
    assert kernel.value("type(slowpipe).__name__, slowpipe.status, slowpipe.ok") == "('GraphRun', 'running', False)"
    assert kernel.value("slowpipe.slow.label, slowpipe['next'].status") == "('slowpipe.slow', 'pending')"
    kernel.run("slowpipe.cancel(); slowpipe.wait(10)")
    assert kernel.value("slowpipe.slow.status, slowpipe.next.status") == "('cancelled', 'blocked')"


def test_failing_test_report_runs_downstream_blocked_and_names_delivered(kernel):
    first = kernel.run(
        "%%bgraph pipeline\n"
        "build: !echo built\n"
        "lint: !true\n"
        "# a comment line\n"
        "test after build: !echo 1 failed; exit 1\n"
        "deploy after test: !echo deploying\n"
        "report after lint, test finally:\n"
        "    summary = {n: r.status for n, r in upstream.items()}\n"
        "    print('report written')\n"
    )
    r = kernel.run("pipeline.wait(30)\nprint(pipeline.ok, summary)")  # the wait delivered summary
    assert "False {'lint': 'succeeded', 'test': 'failed'}" in r.stdout.splitlines()
    notices = first.stdout + r.stdout  # one for the whole graph, not one per task
    assert notices.count("[bg] ") == 1
    assert "[bg] ✗ graph pipeline failed in" in notices
    assert "3 succeeded, 1 failed, 1 blocked; test failed (exit status 1); deploy blocked → summary" in notices
    assert kernel.value("{n: t.status for n, t in pipeline.tasks.items()}") == (
        "{'build': 'succeeded',\n 'lint': 'succeeded',\n 'test': 'failed',\n 'deploy': 'blocked',\n"
        " 'report': 'succeeded'}"
    )
    assert kernel.value("pipeline.deploy.blocked_by, pipeline.report.output") == "(['test'], 'report written\\n')"


def test_upstream_and_namespace_values_reach_bash_quoted(kernel, tmp_path: Path):
    evil = f"a; touch {tmp_path}/pwned"
    kernel.run(f"word = {evil!r}\nfactor = 3")
    kernel.run(
        "%%bgraph flow\n"
        "w: word\n"
        "n: 7 * factor\n"
        "echo after w, n: !printf '%s|' {upstream.w.value} {upstream.n.value} $factor\n"
    )
    kernel.run("word = 'changed after dispatch'")
    assert kernel.value("flow.wait(30).ok") == "True"
    assert kernel.value("flow.echo.result.output") == repr(f"{evil}|21|3|")
    assert not (tmp_path / "pwned").exists()


def test_bad_cells_are_one_line_usage_errors_and_nothing_runs(kernel):
    before = kernel.value("len(_tt_session(_ip).tasks())")
    cases = [
        ("%%bgraph bad\na after b: 1\nb after a: 2\n", "dependency cycle: a -> b -> a"),
        ("%%bgraph bad\nbuild: 1\ntest after bild: 2\n", "line 3: task test runs after 'bild'"),
        ("%%bgraph bad\na: 1\na: 2\n", "duplicate task name a"),
        ("%%bgraph bad\na optional: 1\n", "optional but not finally"),
        ("%%bgraph bad\na:\n", "empty body"),
        ("%%bgraph bad\na fnally: 1\n", "did you mean 'finally'?"),
        ("%%bgraph bad\na: 1\nx = 2\n", "line 3: unexpected '='"),
        ("%%bgraph bad\na:\n    y = (\n", "line 3: syntax error in task a"),
        ("%%bgraph bad --timeout abc\na: 1\n", "%%bgraph: --timeout must be a positive number of seconds"),
        ("%%bgraph bad --max-parallel 0\na: 1\n", "--max-parallel must be a whole number from 1"),
        ("%%bgraph bad --bogus\na: 1\n", "unrecognized arguments: --bogus"),
        ("%%bgraph\na: 1\n", "name the graph"),
        ("%%bgraph not-a-name\na: 1\n", "graph name 'not-a-name' is not usable"),
        ("%%bgraph bad\n# only a comment\n", "the graph has no tasks"),
        ("%%bgraph bad\n", "the cell body is empty"),  # IPython's own words
    ]
    for cell, message in cases:
        err = usage_error(kernel.run(cell, allow_error=True))
        assert message in err, (cell, err)
    assert kernel.value("'bad' in globals()") == "False"
    assert kernel.value("len(_tt_session(_ip).tasks())") == before


def test_a_line_ending_in_a_question_mark_reaches_the_magic(kernel):
    kernel.run("%%bgraph asking\nask: !echo is it France?\n")
    assert kernel.value("asking.wait(30).ask.result.output") == "'is it France?\\n'"


def test_a_running_graph_is_not_replaced_by_accident(kernel):
    kernel.run("%%bgraph again\nlong: !sleep 30\n")
    err = usage_error(kernel.run("%%bgraph again\nlong: !sleep 30\n", allow_error=True))
    assert "graph again is still running (1 task left)" in err
    kernel.run("first = again\n")
    kernel.run("%%bgraph again --replace\nquick: !echo new\n")
    assert kernel.value("first.wait(10).long.status, again.wait(10).ok") == "('cancelled', True)"


def test_rerun_and_cancel_from_cells(kernel, tmp_path: Path):
    flag = tmp_path / "fixed"
    kernel.run(f"flag = {str(flag)!r}")
    kernel.run(
        "%%bgraph rr\n"
        "check: !test -e $flag\n"
        "after_check after check: v = 1\n"
        "tidy after check finally: !echo tidy\n"
    )
    assert kernel.value("rr.wait(30).ok, rr.after_check.status") == "(False, 'blocked')"
    flag.touch()
    r = kernel.run("rr.rerun().wait(30).ok, v")
    assert r.texts[-1] == "(True, 1)"
    assert "[bg] ✓ graph rr finished in" in r.stdout  # a rerun gets its own notice
