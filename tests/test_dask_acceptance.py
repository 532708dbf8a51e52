"""The local backend's acceptance scenarios again, with ``TTasks.backend = "dask"`` (a ``LocalCluster`` of 2).

The scenarios are the very test functions of ``test_bg_kernel`` and
``test_graph_kernel``, collected here a second time with this module's
kernel: every Python task and command they dispatch runs on a Dask worker
(services and prompts stay here, ``bg(fn)`` too). The kernel starts its
``LocalCluster`` on the first Dask task, and closes it when it is unloaded.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Kernel, start_kernel, stop_kernel
from test_bg_kernel import (  # noqa: F401 - collected again with this module's kernel
    test_env_and_cwd,
    test_function_form_and_wait_any,
    test_handle_api,
    test_line_ending_in_question_mark_reaches_the_magic,
    test_loop_binds_names_at_dispatch,
    test_python_failure_notice_and_traceback,
    test_service_ready_notice,
    test_timeout_retries_stall_and_log,
    test_values_are_shell_quoted,
)
from test_graph_kernel import (  # noqa: F401
    _bgraph,
    test_a_running_graph_is_not_replaced_by_accident,
    test_failing_test_report_runs_downstream_blocked_and_names_delivered,
    test_rerun_and_cancel_from_cells,
    test_upstream_and_namespace_values_reach_bash_quoted,
)

pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = start_kernel()
    r = k.run("%config TTasks.backend = 'dask'\nimport os\nkernel_pid = os.getpid()\n"
              "%bg -o warm os.getpid()\n%bg --wait", timeout=90)
    assert "[bg] Dask: started a LocalCluster of 2 worker processes at tcp://127.0.0.1:" in r.stdout
    assert k.value("warm != kernel_pid") == "True"
    yield k
    try:
        # the LocalCluster's worker processes end with the unload (multiprocessing's resource tracker stays)
        r = k.run("import psutil, time\nme = psutil.Process()\n%unload_ext ttasks_ipy\n"
                  "def left():\n    return [p.cmdline() for p in me.children(recursive=True)\n"
                  "            if p.status() != psutil.STATUS_ZOMBIE\n"
                  "            and 'resource_tracker' not in ' '.join(p.cmdline())]\n"
                  "deadline = time.monotonic() + 30\nwhile left() and time.monotonic() < deadline:\n"
                  "    time.sleep(0.1)\nleft()", timeout=60)
        assert r.texts[-1] == "[]", r.texts
    finally:
        stop_kernel(k)


def test_tasks_run_on_the_cluster_and_prompts_and_local_ones_here(kernel: Kernel) -> None:
    kernel.run("%bg p1 = os.getpid()\n%bg -o p2 !echo $$$$\n%bg --local p3 = os.getpid()\n%bg --wait")
    assert kernel.value("p1 != kernel_pid, int(p2.output) != kernel_pid, p3 == kernel_pid") == "(True, True, True)"
