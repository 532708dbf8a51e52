"""%bg from the user's side: cells in a real kernel (jupyter_client)."""
from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

import pytest
from conftest import start_kernel, stop_kernel
from helpers import no_process_left, wait_until

from ttasks_ipy.core.procs import session_members


def test_bash_dispatch_returns_at_once_and_result_arrives_while_idle(kernel):
    r = kernel.run("%bg -o r1 !sleep 2; echo hello")
    assert r.duration < 1.0  # the cell returned while the command runs 2 s
    assert r.texts == ["[bg] #1 → r1 started (bash): !sleep 2; echo hello"] or "→ r1 started (bash)" in r.texts[0]
    # no new cell: the task's own display is updated when the result lands
    msg = kernel.wait_for_idle_message(
        lambda m: m["msg_type"] == "update_display_data" and "r1" in m["content"]["data"]["text/plain"], 10
    )
    assert "finished in" in msg["content"]["data"]["text/plain"]
    assert kernel.value("r1.output, r1.returncode, r1.ok, str(r1)") == "('hello\\n', 0, True, 'hello\\n')"


def test_dispatch_is_fast(kernel):
    r = kernel.run("import time\n_t0 = time.perf_counter()\nh = %bg --quiet !sleep 2\n_dt = time.perf_counter() - _t0")
    assert float(kernel.value("_dt")) < 0.1
    kernel.run("h.cancel()")
    assert r.texts == []


def test_python_statement_delivered_with_a_notice_at_the_next_cell(kernel):
    kernel.run("import threading\ngo = threading.Event()\ndef slow(n):\n    go.wait(10); return n * 2")
    kernel.run("hx = %bg x = slow(21)")
    r = kernel.run("go.set()\nassert hx.wait_done(10)\nprint('x' in globals())")
    # finished while this cell ran, but never written while it ran; the notice came at its end
    assert r.stdout.startswith("False\n[bg] ✓") and r.stdout.rstrip().endswith("→ x")
    assert kernel.run("x").texts[-1] == "42"


def test_nothing_written_while_a_cell_runs(kernel):
    r = kernel.run(
        "hd = %bg during = 1\nassert hd.wait_done(10)\nimport time\nseen = []\nfor _ in range(10):\n"
        "    seen.append('during' in globals()); time.sleep(0.01)\nprint(any(seen))"
    )
    assert r.stdout.splitlines()[0] == "False"
    assert "[bg] ✓" not in r.stdout  # its own line, shown in this cell, was updated in place
    assert "finished" in r.texts[-1]
    assert kernel.value("during") == "1"


def test_loop_binds_names_at_dispatch(kernel):
    r = kernel.run("for p in range(4):\n    %bg -o r{p} --quiet p*10\n%bg --wait all\nprint(r0, r1, r2, r3)")
    assert r.stdout.strip().splitlines()[-1] == "0 10 20 30"


def test_line_ending_in_question_mark_reaches_the_magic(kernel):
    r = kernel.run("%bg -n ask -o q !echo is it France?\n%bg --wait ask")
    assert kernel.value("q.output") == "'is it France?\\n'"
    assert "pinfo" not in r.stdout + r.stderr


def test_values_are_shell_quoted(kernel, tmp_path):
    target = tmp_path / "PWNED"
    kernel.run(f"evil = 'a; touch {target}'\nwords = ['x y', 'z']")
    kernel.run("%bg -n quoting -o qq !printf '%s|' {evil} \"$evil\" {words}\n%bg --wait quoting")
    assert kernel.value("qq.output") == f"'a; touch {target}|a; touch {target}|x y|z|'"
    assert not target.exists()


def test_env_and_cwd(kernel, tmp_path):
    kernel.run(f"d = {str(tmp_path)!r}\nn = 7")
    kernel.run("%bg -o e --env N=n*6 --cwd {d} !echo $$N $$PWD\n%bg --wait")
    assert kernel.value("e.output") == f"'42 {tmp_path}\\n'"


def test_handle_api(kernel):
    kernel.run("h = %bg -n hapi !sleep 0.5; echo done")
    r = kernel.run("h.result", allow_error=True)
    assert "TaskNotDone" in r.error["ename"] and "wait for it first" in r.error["evalue"]
    assert kernel.value("h.wait(10).status, h.done(), h.output") == "('succeeded', True, 'done\\n')"


def test_function_form_and_wait_any(kernel):
    kernel.run("import ttasks_ipy\na = ttasks_ipy.bg(sum, [1, 2, 3])\nb = %bg --quiet !sleep 5")
    assert kernel.value("[t.result for t in ttasks_ipy.wait_any([a, b], timeout=10)]") == "[6]"
    kernel.run("b.cancel()")


def test_cancel_returns_at_once_and_leaves_no_process(kernel):
    kernel.run("h = %bg -n stubborn !trap '' TERM; sleep 300 & sleep 300")
    pid = int(kernel.value("import time\nwhile h.pid is None: time.sleep(0.01)\nh.pid"))
    wait_until(lambda: len(session_members(pid)) >= 2, 5, "both sleeps started")
    r = kernel.run("t0 = time.perf_counter()\n%bg --cancel stubborn\ndt = time.perf_counter() - t0")
    assert float(kernel.value("dt")) < 0.05
    assert "[bg] cancelled: stubborn" in r.stdout
    no_process_left(pid, 2.0 + 3)
    assert kernel.value("h.status") == "'cancelled'"


def test_timeout_retries_stall_and_log(kernel):
    kernel.run("%bg -n tmo --timeout 0.3 !sleep 10\n%bg --wait tmo")
    assert kernel.value("_ = %bg --quiet -- 1\ntmo_t = get_ipython().run_line_magic('bg', '--quiet -- 2')\n"
                        "__import__('ttasks_ipy').kernel.session().find('tmo').reason") == "'timed out after 0.3s'"
    r = kernel.run("%bg -n flaky --retries 2 --backoff 0.05 !echo try; exit 1\n%bg --wait flaky\n%bg --log flaky")
    assert "[bg] flaky: failed (exit status 1)" in r.stdout
    assert "flaky failed after" in r.stdout and "after 3 attempts" in r.stdout  # the wait's notice
    assert "[bg] attempt 1 failed: exit status 1" in r.stdout and "[bg] attempt 2 failed" in r.stdout
    assert kernel.value("__import__('ttasks_ipy').kernel.session().find('flaky').attempt") == "3"
    kernel.run("st = %bg -n quietly --stall 0.2 !sleep 0.8; echo end")
    kernel.run("import time\nwhile not st.stalled: time.sleep(0.02)")  # bounded by the cell timeout
    assert "stalled" in kernel.run("%bg --list").stdout
    kernel.run("%bg --wait quietly")
    r = kernel.run("%bg --log quietly --tail 1")
    assert r.stdout.strip().endswith("end")


def test_python_failure_notice_and_traceback(kernel):
    r = kernel.run("%bg -n broken --quiet y = 1 / 0\n%bg --wait broken")
    assert "[bg] ✗ broken failed after" in r.stdout
    assert "ZeroDivisionError: division by zero (see %bg --log broken)" in r.stdout
    log = kernel.run("%bg --log broken").stdout
    assert "Traceback" in log and "ZeroDivisionError" in log and "executor.py" not in log
    assert kernel.run("'y' in globals()").texts[-1] == "False"


def test_service_ready_notice(kernel):
    kernel.run("web = %bg --service --ready 'Serving HTTP' -n web !python -m http.server 0 --bind 127.0.0.1")
    r = kernel.run("import time\nwhile web.ready_line is None: time.sleep(0.02)")
    # READY came while this cell ran: its one-line notice is printed at the cell's end
    assert "[bg] ▶ web ready: Serving HTTP on 127.0.0.1" in r.stdout
    assert kernel.value("web.status") == "'running'"
    kernel.run("%bg --cancel web")


def test_wait_all_answers_in_dispatch_order_whatever_order_the_tasks_ended_in(kernel):
    # they end in the reverse of dispatch order while the cell runs on; the wait says them in dispatch order
    r = kernel.run(
        "import time\n"
        "for p in range(5):\n"
        "    %bg --quiet -n rev{p} -o rv{p} (time.sleep(0.3 - p * 0.06), p)[1]\n"
        "time.sleep(1)\n"
        "%bg --wait all --timeout 30"
    )
    said = re.findall(r"✓ (rev\d) finished", r.stdout)
    assert said == [f"rev{p}" for p in range(5)], r.stdout


def test_wait_for_a_service_with_ready_returns_when_it_is_ready(kernel):
    kernel.run("%bg --service --ready 'Serving HTTP' -n site !python -m http.server 0 --bind 127.0.0.1")
    r = kernel.run("%bg --wait site --timeout 60\nprint('after the wait')")
    # the wait answered with the ready line, said once (the cell's end does not repeat it), and the service runs on
    assert r.stdout.count("[bg] ▶ site ready: Serving HTTP on 127.0.0.1") == 1, r.stdout
    assert "waited" not in r.stdout and r.stdout.rstrip().endswith("after the wait")
    assert kernel.value("import ttasks_ipy; ttasks_ipy.task('site').status") == "'running'"
    # already ready: a second wait says so at once
    again = kernel.run("%bg --wait site --timeout 60")
    assert again.stdout.count("[bg] ▶ site ready:") == 1, again.stdout
    kernel.run("%bg --cancel site")


def test_wait_for_a_service_that_never_gets_ready_is_bounded_and_one_that_fails_is_said(kernel):
    kernel.run("%bg --service --ready 'never said' -n mute !sleep 60")
    r = kernel.run("%bg --wait mute --timeout 0.5")
    assert "[bg] waited 0.5s; not ready yet: mute; they go on (wait again, or %bg --cancel)" in r.stdout
    assert kernel.value("import ttasks_ipy; ttasks_ipy.task('mute').status") == "'running'"
    kernel.run("%bg --cancel mute")
    kernel.run("%bg --service --ready 'never said' -n dud !echo no config >&2; exit 3")
    r = kernel.run("%bg --wait dud --timeout 60")
    assert "[bg] ✗ dud failed" in r.stdout and "exit status 3" in r.stdout, r.stdout


def test_cap_of_four(kernel):
    kernel.run("%config TTasks.max_workers = 4")
    kernel.run(
        "import threading, time\nsess = __import__('ttasks_ipy').kernel.session()\n"
        "running = [0]; peak = [0]; lock = threading.Lock()\n"
        "def on(ev):\n"
        "    with lock:\n"
        "        if ev.kind.value == 'started': running[0] += 1; peak[0] = max(peak[0], running[0])\n"
        "        elif ev.kind.terminal: running[0] -= 1\n"
        "unsub = sess.executor.bus.subscribe(on)\n"
        "hs = [get_ipython().run_line_magic('bg', '--quiet !sleep 0.02') for _ in range(100)]\n"
        "%bg --wait all --timeout 60\nunsub()"
    )
    assert kernel.value("peak[0], all(h.status == 'succeeded' for h in hs)") == "(4, True)"
    kernel.run("%config TTasks.max_workers = 8")


BAD = [
    ("%bg --foo 1", "unknown option --foo"),
    ("%bg --timeout abc !true", "%bg: --timeout must be a positive number of seconds (like 30 or 1.5; at most a "
                                "year), not 'abc'"),
    ("%bg --timeout -1 !true", "--timeout must be a positive number of seconds"),
    ("%bg --timeout inf !true", "--timeout must be a positive number of seconds"),
    ("%bg --timeout 1e300 !true", "--timeout must be a positive number of seconds"),
    ("%bg --stall nan !true", "--stall must be a positive number of seconds"),
    ("%bg --retries -2 !true", "--retries must be a whole number from 0"),
    ("%bg --retries ² !true", "--retries must be a whole number from 0"),
    ("%bg", "nothing to run"),
    ("%bg -n fit", "nothing to run"),
    ("%bg --cancel nosuch", "no task 'nosuch'"),
    ("%bg x = = 1", "syntax error in the body, line 1"),
    ("%bg -n 9lives !true", "a task name must be an identifier"),
    ("%bg -n all !true", "a task name must be an identifier other than all/any"),
    ("%bg -o r{nosuchname} !true", "{nosuchname}: name 'nosuchname' is not defined"),
    ("%bg !echo $(( {__name__} ))", "{__name__} stands inside $((…)), where bash evaluates text as arithmetic"),
    ("%bg !echo \"{__name__}", "unclosed \" quote in the command"),
    ("%bg -o v x = 1", "-o v takes the value of an expression, but the body is a statement"),
    ("%bg --list --name x", "does not go with --list"),
    ("%bg --quiet --cancel x", "--cancel is an action"),
    ("%bg --time 3 !true", "unknown option --time"),
    ("%bg --env 1=2 !true", "write NAME=expression"),
    ("%bg --cwd /no/such/dir !true", "is not a directory"),
    ("%bg --ready x !true", "--ready goes with --service"),
]


@pytest.mark.parametrize("line,message", BAD)
def test_bad_input_is_a_one_line_usage_error_and_disturbs_nothing(kernel, line, message):
    before = kernel.value("len(__import__('ttasks_ipy').kernel.session().tasks()), sorted(globals())[:0]")
    r = kernel.run(line, allow_error=True)
    assert r.error is None or r.error["ename"] == "UsageError"
    err = r.stderr.strip()
    assert err.startswith("UsageError: %bg") and "\n" not in err, err
    assert message in err
    assert "Traceback" not in r.stderr + r.stdout
    assert kernel.value("len(__import__('ttasks_ipy').kernel.session().tasks()), sorted(globals())[:0]") == before


def test_unload_removes_everything():
    k = start_kernel()
    try:
        k.run("h = %bg --quiet !sleep 300")
        pid = int(k.value("import time\nwhile h.pid is None: time.sleep(0.01)\nh.pid"))
        r = k.run("%unload_ext ttasks_ipy")
        assert r.stdout.strip() == "[bg] unloaded: cancelled 1 active task (#1)", r.stdout
        no_process_left(pid, 5)
        r = k.run("%bg !true", allow_error=True)
        assert "UsageError" in r.stderr and "bg" in r.stderr
        k.run("%load_ext ttasks_ipy\n%bg -o again !echo back\n%bg --wait")
        assert k.value("again.output") == "'back\\n'"
    finally:
        stop_kernel(k)


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_kernel_exit_leaves_no_orphan(how):
    k = start_kernel()
    try:
        k.run("a = %bg --quiet !trap '' TERM; sleep 300 & sleep 300\nb = %bg --quiet !sleep 300")
        pids = [int(k.value(f"import time\nwhile {h}.pid is None: time.sleep(0.01)\n{h}.pid")) for h in "ab"]
        if how == "sigkill":
            os.kill(k.pid, signal.SIGKILL)
        else:
            stop_kernel(k)
        for pid in pids:
            no_process_left(pid, 2.0 + 5)
    finally:
        stop_kernel(k)  # after a SIGKILL too: the manager's sockets and context must close, or exit hangs


def test_interrupt_does_not_reach_tasks(fresh_kernel):
    k = fresh_kernel
    k.run("h = %bg --quiet !sleep 30\nimport time\nwhile h.pid is None: time.sleep(0.01)")
    pid = int(k.value("h.pid"))
    k.interrupt_busy_cell()
    assert k.value("h.status") == "'running'"
    assert session_members(pid)
    k.run("h.cancel()")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _idle_until(k: Any, predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """The messages sent while idle, up to and with the first that satisfies ``predicate`` (bounded)."""
    seen: list[dict[str, Any]] = []
    k.wait_for_idle_message(lambda m: seen.append(m) or predicate(m), timeout)
    return seen


def test_with_widgets_the_card_shows_and_the_result_arrives_while_idle():
    k = start_kernel(widgets=True)
    try:
        r = k.run("%bg -n carded -o rw !sleep 0.3; echo w")
        shown = [m for m in r.messages if m["msg_type"] == "display_data"]
        assert len(shown) == 1 and shown[0]["content"]["data"]["text/plain"] == (
            "[bg] carded → rw started (bash): !sleep 0.3; echo w")
        assert WIDGET_VIEW not in shown[0]["content"]["data"]  # its start as HTML, until the cell is answered
        # no cell runs: the card goes live, then its own update says what was delivered (rw is in the namespace)
        seen = _idle_until(k, lambda m: m["msg_type"] == "comm_msg" and "delivered" in json.dumps(m["content"])
                           and "rw" in json.dumps(m["content"]))
        assert any(m["msg_type"] == "update_display_data" and WIDGET_VIEW in m["content"]["data"] for m in seen)
        r = k.run("print('rw' in globals(), rw.output)")
        assert r.stdout.startswith("True w")
    finally:
        stop_kernel(k)


SHARED = {"LayoutModel", "HTMLStyleModel", "ButtonStyleModel"}  # made once per kernel, shared by every card


def _opened(messages: list[dict[str, Any]]) -> list[str]:
    """The widget models of a card's own opened among ``messages``, by model name, in order."""
    return [m["content"]["data"]["state"]["_model_name"] for m in messages if m["msg_type"] == "comm_open"
            and m["content"]["data"]["state"]["_model_name"] not in SHARED]


def _live_row(messages: list[dict[str, Any]]) -> None:
    """``messages`` open a card's HTML, button and the row around both, and show the card as that row."""
    assert _opened(messages) == ["HTMLModel", "ButtonModel", "HBoxModel"]
    opens = {m["content"]["data"]["state"]["_model_name"]: m["content"] for m in messages
             if m["msg_type"] == "comm_open" and m["content"]["data"]["state"]["_model_name"] not in SHARED}
    assert opens["HBoxModel"]["data"]["state"]["children"] == [
        "IPY_MODEL_" + opens["HTMLModel"]["comm_id"], "IPY_MODEL_" + opens["ButtonModel"]["comm_id"]]
    views = [m["content"]["data"][WIDGET_VIEW]["model_id"] for m in messages
             if m["msg_type"] == "update_display_data" and WIDGET_VIEW in m["content"]["data"]]
    assert views == [opens["HBoxModel"]["comm_id"]]


def test_a_card_opens_its_widgets_once_its_cell_is_answered_only_while_its_task_runs():
    k = start_kernel(widgets=True)
    try:
        k.run("%config TTasks.notices = False")
        running = "h = %bg !sleep 30\nimport time\nwhile h.status != 'running': time.sleep(0.01)"
        k.run(running)
        _idle_until(k, lambda m: m["msg_type"] == "update_display_data")
        k.run("h.cancel()")
        r = k.run(running)
        assert _opened(r.messages) == []  # the cell shows the card's start as HTML
        _live_row(_idle_until(k, lambda m: m["msg_type"] == "update_display_data"))
        k.run("h.cancel()")
        r = k.run("q = %bg 1\nq.wait(10)")
        assert _opened(r.messages) == []  # ended within its cell: its end replaces the card, no widget opens
        r = k.run("%bg --list")
        assert _opened(r.messages + k.drain_idle(0.5)) == []
    finally:
        stop_kernel(k)


def test_a_card_goes_live_while_the_long_cell_that_dispatched_it_still_runs():
    k = start_kernel(widgets=True)
    try:
        k.run("%config TTasks.notices = False")
        # the cell goes on working for three seconds after the dispatch (the scenario, not a synchronisation)
        r = k.run("h = %bg !sleep 30\nimport time\ntime.sleep(3)")
        _live_row(r.messages)
        html = next(m["content"]["comm_id"] for m in r.messages if m["msg_type"] == "comm_open"
                    and m["content"]["data"]["state"]["_model_name"] == "HTMLModel")
        opened_at = next(i for i, m in enumerate(r.messages) if m["msg_type"] == "comm_open"
                         and m["content"]["comm_id"] == html)
        ticks = [m for m in r.messages[opened_at:] if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == html]
        assert ticks  # live: its clock went on ticking within the cell
        k.run("h.cancel()")
    finally:
        stop_kernel(k)


def test_list_counts_queued_and_lingering_thread_tasks(fresh_kernel):
    k = fresh_kernel
    k.run("%config TTasks.max_workers = 1")
    k.run("a = %bg --quiet import time; time.sleep(3)\nb = %bg --quiet !true")
    k.run("import time\nwhile a.status != 'running': time.sleep(0.01)")
    out = k.run("%bg --list").stdout
    assert "[bg] 1 of 1 workers busy; 1 queued" in out
    out = k.run("a.cancel()\n%bg --list").stdout  # time.sleep cannot be interrupted in a thread
    assert "1 cancelled thread task still finishing a blocking call" in out
    assert k.value("b.wait(10).status") == "'succeeded'"  # the slot went to b at once


def test_interrupt_stops_the_wait_not_the_task(fresh_kernel):
    k = fresh_kernel
    k.run("slow = %bg -n slowpoke --quiet !sleep 30")
    out = k.interrupt_busy_cell("%bg --wait slowpoke --timeout 60", expect_error=False)
    assert "[bg] wait interrupted after" in out and "still running: slowpoke" in out
    assert k.value("slow.status") == "'running'"
    k.run("slow.cancel()")


def test_handle_wait_on_the_main_thread_delivers_now(kernel):
    r = kernel.run("hw = %bg --quiet w1 = 5\nhw.wait(10)\nprint('w1' in globals(), w1)")
    assert r.stdout.splitlines()[-1] == "True 5"


def test_an_awaiting_cell_is_never_written_mid_cell(kernel):
    r = kernel.run(
        "import asyncio\nha = %bg --quiet awaited = 1\n"
        "for _ in range(50):\n    if ha.done(): break\n    await asyncio.sleep(0.02)\n"
        "await asyncio.sleep(0.2)  # the kernel's loop runs callbacks during these awaits\n"
        "print(ha.done(), 'awaited' in globals())"
    )
    assert r.stdout.splitlines()[0] == "True False"
    assert kernel.value("awaited") == "1"
