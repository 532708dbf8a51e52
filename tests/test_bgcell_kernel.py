"""%%bg background cells and what a task's own thread prints, in a real kernel."""
from __future__ import annotations

import pytest


def test_cell_runs_in_background_and_delivers_assigned_names(kernel):
    r = kernel.run(
        "%%bg -n prep\nimport time\ndata = list(range(5))\ntime.sleep(0.3)\ntotal = sum(data)\n"
        "print('loaded', len(data))"
    )
    assert r.duration < 0.25
    assert r.stdout == ""  # the print went to the task, not this cell
    assert kernel.value("prep.status") in ("'running'", "'succeeded'")  # the handle is bound at once
    r = kernel.run("%bg --wait prep")
    assert "→ time, data, total" in r.stdout or "→ data, total" in r.stdout
    assert kernel.value("data, total, prep.output") == "([0, 1, 2, 3, 4], 10, 'loaded 5\\n')"


def test_names_option_delivers_only_those(kernel):
    kernel.run("%%bg -n only --names b\na1 = 1\nb = 2")
    kernel.run("%bg --wait only")
    assert kernel.value("'a1' in globals(), b") == "(False, 2)"


def test_bash_cell_passed_as_written(kernel):
    kernel.run(
        "%%bg --bash -n script -o sout --env GREETING=\"'hi'\"\nX=3\n"
        "echo \"${GREETING} ${X}\" | awk '{print $2, $1}'"
    )
    kernel.run("%bg --wait script")
    assert kernel.value("sout.output") == "'3 hi\\n'"


def test_prints_from_background_cells_stay_in_their_tasks(kernel):
    code = "%%bg -n {n}\nimport time\nfor i_{n} in range(30):\n    print('{n}', i_{n})\n    time.sleep(0.005)"
    kernel.run(code.format(n="left"))
    kernel.run(code.format(n="right"))
    fg = kernel.run("import time\nfor i in range(30):\n    print('fg', i)\n    time.sleep(0.005)")
    lines = fg.stdout.splitlines()
    assert lines[:30] == [f"fg {i}" for i in range(30)]
    assert all(line.startswith("[bg] ✓") for line in lines[30:])  # notices at the cell's end, nothing else
    kernel.run("%bg --wait left right")
    for n in ("left", "right"):
        assert kernel.value(f"{n}.output") == repr("".join(f"{n} {i}\n" for i in range(30)))


def test_warnings_logging_and_display_go_to_the_task(kernel):
    kernel.run("import logging, warnings\nlogging.basicConfig(level=logging.INFO)\nlog = logging.getLogger('demo')")
    r = kernel.run(
        "%%bg -n noisy\nimport warnings, sys\nfrom IPython.display import display\n"
        "warnings.warn('careful')\nlog.info('logged line')\nprint('to err', file=sys.stderr)\ndisplay('shown')"
    )
    r2 = kernel.run("%bg --wait noisy")
    both = r.all_text + r2.all_text
    assert "careful" not in both and "logged line" not in both and "to err" not in both
    err = kernel.value("noisy.stderr")
    assert "careful" in err and "logged line" in err and "to err" in err
    assert kernel.value("noisy.displays[0]['text/plain'], noisy.output") == "(\"'shown'\", \"'shown'\\n\")"


def test_matplotlib_figure_is_captured_not_shown_elsewhere(kernel):
    pytest.importorskip("matplotlib")
    kernel.run(
        "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt"
    )
    kernel.run("%%bg -n plot\nimport matplotlib.pyplot as plt\nfig = plt.figure()\nplt.plot([1, 2, 3])")
    r = kernel.run("%bg --wait plot\n1 + 1")
    assert not any(m["msg_type"] == "display_data" and "image/png" in m["content"]["data"] for m in r.messages)
    assert kernel.value("'image/png' in plot.displays[0]") == "True"
    r = kernel.run("plt.plot([1]); None")  # a foreground figure still shows as usual
    assert any("image/png" in m["content"].get("data", {}) for m in r.messages if m["msg_type"] == "display_data")


def test_input_fails_at_once(kernel):
    kernel.run("%%bg -n asks\nname = input('who? ')")
    r = kernel.run("%bg --wait asks --timeout 10")
    assert "RuntimeError: input() cannot be answered in a background task" in r.stdout


def test_traceback_has_the_cells_own_line_numbers(kernel):
    kernel.run("%%bg -n lines\nx = 1\ny = 2\nz = x / 0")
    kernel.run("%bg --wait lines")
    log = kernel.run("%bg --log lines").stdout
    assert "line 4" in log and "z = x / 0" in log


@pytest.mark.parametrize(
    "cell,message",
    [
        ("%%bg\nx = = 1", "syntax error in the body, line 2"),
        ("%%bg -n c1 print(1)\nx = 1", "the first line takes options only"),
        ("%%bg\n\n", "the cell is empty"),
        ("%%bg --names zz\nx = 1", "the cell never assigns zz"),
        ("%%bg -o v\nx = 1", "-o v takes the value of an expression"),
    ],
)
def test_bad_cells(kernel, cell, message):
    before = kernel.value("len(__import__('ttasks_ipy').kernel.session().tasks())")
    r = kernel.run(cell, allow_error=True)
    assert r.stderr.startswith("UsageError: %") and message in r.stderr and r.stderr.count("\n") == 1
    assert kernel.value("len(__import__('ttasks_ipy').kernel.session().tasks())") == before


# ---- --process ------------------------------------------------------------
def test_process_task_delivers_and_kernel_stays_responsive(kernel):
    kernel.run("def burn(n):\n    s = 0\n    for i in range(n):\n        s += i * i\n    return s\noffset = 1")
    kernel.run("hp = %bg -n burner --process --quiet total_sq = burn(30_000_000) + offset")
    kernel.run("import time\nwhile hp.pid is None and not hp.done(): time.sleep(0.01)")
    # the worker burns a core; a foreground cell still answers at once
    r = kernel.run("1 + 1")
    assert r.duration < 0.1, r.duration
    kernel.run("%bg --wait burner --timeout 60")
    assert kernel.value("total_sq == burn(30_000_000) + 1") == "True"


def test_process_cell_captures_fd_output(kernel):
    kernel.run("%%bg -n proc_cell --process\nimport os\nprint('printed')\nos.system('echo from the shell')\nw = 6 * 7")
    kernel.run("%bg --wait proc_cell")
    assert kernel.value("proc_cell.output, w") == "('printed\\nfrom the shell\\n', 42)"


def test_process_cancel_ends_the_worker_and_the_next_runs(kernel):
    from helpers import no_process_left

    kernel.run("hs = %bg -n sleeper --process --quiet import time; time.sleep(300)")
    pid = int(kernel.value("import time\nwhile hs.pid is None: time.sleep(0.01)\nhs.pid"))
    kernel.run("%bg --cancel sleeper")
    no_process_left(pid, 2.0 + 3)
    kernel.run("%bg -n after_cancel --process -o again 2 + 3\n%bg --wait after_cancel --timeout 30")
    assert kernel.value("again") == "5"


def test_unpicklable_input_is_named(kernel):
    r = kernel.run("import threading\nlk = threading.Lock()\n%bg --process q = lk", allow_error=True)
    assert r.stderr.strip() == (
        "UsageError: %bg: cannot send 'lk' to a worker process: TypeError: cannot pickle '_thread.lock' object"
    )


def test_interrupt_leaves_process_task_running(fresh_kernel):
    k = fresh_kernel
    k.run("hs = %bg --process --quiet import time; time.sleep(30)\nimport time\nwhile hs.pid is None: time.sleep(0.01)")
    k.interrupt_busy_cell()
    assert k.value("hs.status") == "'running'"
    k.run("hs.cancel()")


def test_a_name_that_already_holds_the_very_value_is_not_reported_as_reassigned(kernel):
    kernel.run("import threading\ngate_same = threading.Event()\nshared = [1, 2]")
    kernel.run("%%bg -n same --quiet\ngate_same.wait(10)\nalias = shared")
    kernel.run("alias = shared")  # the user made the same binding meanwhile
    r = kernel.run("gate_same.set()\n%bg --wait same")
    assert "same finished" in r.stdout and "not delivered" not in r.stdout, r.stdout
    assert kernel.value("alias is shared") == "True"


def test_a_name_reassigned_after_dispatch_is_not_overwritten(kernel):
    kernel.run("import threading\ngate = threading.Event()")
    kernel.run("%%bg -n late --quiet\ngate.wait(10)\nresult_x = 'from the task'")
    kernel.run("result_x = 'mine'")  # the user reassigns the target while the task runs
    r = kernel.run("gate.set()\n%bg --wait late")
    held = "the value: ttasks_ipy.task('late').result['result_x']"
    assert f"not delivered: result_x (reassigned since dispatch; {held})" in r.stdout
    assert kernel.value("import ttasks_ipy\nttasks_ipy.task('late').result['result_x']") == "'from the task'"
    assert kernel.value("result_x, late.result['result_x']") == "('mine', 'from the task')"
    kernel.run("%config TTasks.overwrite = True")
    kernel.run("gate.clear()")
    kernel.run("%%bg -n late2 --quiet\ngate.wait(10)\nresult_x = 'second'")
    kernel.run("result_x = 'mine again'")
    kernel.run("gate.set()\n%bg --wait late2")
    assert kernel.value("result_x") == "'second'"
    kernel.run("%config TTasks.overwrite = False")
