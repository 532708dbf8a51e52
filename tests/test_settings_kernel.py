"""Every ``TTasks`` setting changed after ``%load_ext`` takes effect for what comes next (in a real kernel)."""
from __future__ import annotations

import pytest
from conftest import start_kernel, stop_kernel

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def k():
    kernel = start_kernel()
    yield kernel
    stop_kernel(kernel)


def test_engine_settings_reach_the_engine(k):
    k.run("%config TTasks.max_workers = 1\n%config TTasks.max_services = 1\n%config TTasks.queue_policy = 'reject'\n"
          "%config TTasks.grace = 0.3\n%config TTasks.tail_chars = 1000\n%config TTasks.file_cap = 2000")
    ex = "__import__('ttasks_ipy').kernel.session().executor"
    assert k.value(f"({ex}.max_workers, {ex}.max_services, {ex}.queue_policy, {ex}.grace)") == \
        "(1, 1, 'reject', 0.3)"
    # tail_chars and file_cap: a task started now keeps 1,000 characters in memory and 2,000 bytes on disk
    k.run("t = %bg --quiet !head -c 10000 /dev/zero | tr '\\\\0' x\nt.wait(20)")
    assert k.value("len(t.output_buffer.tail())") == "1000"
    assert k.value("len(t.output.split('\\n')[0])") == "2000"
    # max_workers with queue_policy='reject': a second task is refused while the first runs
    r = k.run("s = %bg --quiet !sleep 30\n%bg --quiet !true", allow_error=True)
    assert "UsageError: %bg: all 1 workers are busy and queue_policy is 'reject'" in r.stderr
    assert "Traceback" not in r.all_text
    # grace: a cancelled command that ignores SIGTERM is killed after 0.3 s, not the default 2 s
    k.run("s.cancel()\n%config TTasks.queue_policy = 'queue'")
    k.run("import time\nstub = %bg --quiet !trap '' TERM; echo up; sleep 30\n"
          "while 'up' not in stub.output: time.sleep(0.01)")
    r = k.run("import os, signal\npid = stub.pid\nt0 = time.monotonic(); stub.cancel()\n"
              "while True:\n    try:\n        os.kill(pid, 0)\n    except ProcessLookupError:\n        break\n"
              "    if time.monotonic() - t0 > 5: break\n    time.sleep(0.01)\nprint(round(time.monotonic() - t0, 1))")
    assert float(r.stdout.split()[0]) < 1.5
    # max_services
    k.run("svc = %bg --quiet --service !sleep 30")
    r = k.run("%bg --quiet --service !sleep 30", allow_error=True)
    assert "max_services=1" in r.stderr
    k.run("svc.cancel()")


def test_shell_settings_are_read_when_used(k):
    # notices off: a result arrives without a notice line
    r = k.run("%config TTasks.notices = False\na = %bg --quiet -o x 40 + 2\na.wait(10)")
    assert "[bg]" not in r.all_text
    assert k.value("x") == "42"
    # overwrite on: a name reassigned since dispatch is overwritten
    k.run("%config TTasks.overwrite = True\nimport time\nh = %bg --quiet -o y (time.sleep(0.3), 'task')[1]\n"
          "y = 'mine'\nh.wait(10)")
    assert k.value("y") == "'task'"
    # widgets off: the dispatch line is text
    r = k.run("%config TTasks.widgets = False\n%config TTasks.notices = True\n%bg 1 + 1")
    assert any(t.startswith("[bg]") for t in r.texts)


def test_a_bad_value_is_refused_and_the_old_one_stays(k):
    r = k.run("%config TTasks.max_workers = 0", allow_error=True)
    text = r.all_text + ("" if r.error is None else r.error["evalue"])
    assert "TTasks.max_workers must be from 1 to 4096, not 0" in text
    assert k.value("__import__('ttasks_ipy').kernel.session().executor.max_workers") != "0"


#: where each setting's change after load is tested (a new setting must join one of these)
TESTED_AFTER_LOAD = {
    "test_engine_settings_reach_the_engine": {"max_workers", "max_services", "queue_policy", "grace", "tail_chars",
                                              "file_cap"},
    "test_shell_settings_are_read_when_used": {"notices", "overwrite", "widgets"},
    "test_prompt_kernel.py::test_every_llm_setting_changed_after_load_reaches_the_next_prompt": {
        "llm_model", "llm_system", "llm_temperature", "llm_api_key_env", "llm_base_url", "llm_timeout",
        "llm_max_concurrency", "llm_callable"},
    "test_prompt_kernel.py (api version, extra headers) and test_secrets_kernel.py (retries)": {
        "llm_api_version", "llm_extra_headers", "llm_retries"},
    "test_ledger_kernel.py (the three settings take effect at once)": {"ledger", "ledger_path", "ledger_result_cap"},
    "test_dask_kernel.py (a changed address or timeout makes the cluster link again) and test_dask_acceptance.py "
    "(backend)": {"dask_address", "dask_timeout", "backend"},
    # read when a LocalCluster starts; a change after that is said at once and applies from the next Dask task
    # (kernel/dask_link.py): not yet changed after load by a test, which would start a second cluster
    "not tested after load yet": {"dask_workers", "dask_threads_per_worker"},
}


def test_every_setting_has_a_test_of_changing_it_after_load():
    from ttasks_ipy.kernel.config import TTasks

    covered = set().union(*TESTED_AFTER_LOAD.values())
    settings = set(TTasks.class_trait_names(config=True))
    assert settings - covered == set(), "add a test of how these settings take effect when changed after load"
    assert covered - settings == set(), "these are no longer settings"
