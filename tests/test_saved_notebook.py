"""What a saved notebook keeps of tasks, graphs and the dashboard: text/plain and text/html beside the widget view.

A notebook is executed headless in a real kernel (nbclient) and saved; its
outputs are read back as GitHub or nbviewer would read them (no widgets), and
exported with nbconvert as nbviewer does. A raw kernel client checks that an
end delivered while the kernel is idle is sent under the cell that shows the
card (JupyterLab applies a display update only there).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import start_kernel, stop_kernel
from nbclient import NotebookClient

WIDGET = "application/vnd.jupyter.widget-view+json"

# every task waits for the file `go`, made by the last cell: so each ends while that cell runs (nbclient
# reads only the running cell's messages; an end delivered between two cells is not in its saved copy)
CELLS = [
    "%load_ext ttasks_ipy\nimport os, time\n\n"
    "def after_go():\n    while not os.path.exists('go'):\n        time.sleep(0.05)\n    return 1 / 0",
    "%bg --dashboard",
    "%bg -n fetch -o r !while [ ! -e go ]; do sleep 0.05; done; echo 'fetched <b>7</b> rows'",
    "%bg -n oops z = after_go()",
    "%%bgraph pipe\nstep: !while [ ! -e go ]; do sleep 0.05; done; echo one\nnext after step: !exit 3",
    "open('go', 'w').close()\n%bg --wait fetch oops pipe --timeout 60",
]


class _Reference(NotebookClient):
    """Keeps outputs as they were first shown (display updates not applied), as nbval compares them."""

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        return None


def _execute(tmp: Path, cls: type[NotebookClient] = NotebookClient) -> Any:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # saved as JupyterLab saves by default: without the widgets' state
    cls(nb, timeout=90, kernel_name="python3", store_widget_state=False,
        resources={"metadata": {"path": str(tmp)}}).execute()
    path = tmp / "saved.ipynb"
    nbformat.write(nb, path)
    return nbformat.read(path, as_version=4)  # what a reader of the file sees


def _display(nb: Any, cell: int) -> dict[str, Any]:
    """The data of the one display of ``cell``."""
    shown = [o for o in nb.cells[cell].outputs if o.output_type == "display_data"]
    assert len(shown) == 1, nb.cells[cell].outputs
    return shown[0].data


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _execute(tmp_path_factory.mktemp("saved"))


def test_a_saved_card_says_what_ran_how_it_ended_and_what_it_delivered(saved: Any) -> None:
    fetch = _display(saved, 2)
    plain = fetch["text/plain"]
    assert plain.splitlines()[0].startswith("[bg] fetch → r (bash): !while [ ! -e go ]")
    assert "[bg] ✓ fetch finished in" in plain and plain.splitlines()[1].endswith("→ r")
    assert "fetched <b>7</b> rows" in plain  # its last output lines, as text
    html = fetch["text/html"]
    assert 'data-status="succeeded"' in html and 'data-task="fetch"' in html
    assert "fetched &lt;b&gt;7&lt;/b&gt; rows" in html and "<b>7</b>" not in html  # escaped
    assert "delivered" in html and ">r</b>" in html
    assert html.count("<style>") == 1 and "widget-html-content" not in html  # the theme's palette, nothing else
    assert WIDGET not in fetch  # ended, the card is its HTML: shown alike with or without a kernel or widget state

    oops = _display(saved, 3)
    assert "[bg] ✗ oops failed after" in oops["text/plain"]
    assert "ZeroDivisionError: division by zero" in oops["text/plain"]
    assert 'data-status="failed"' in oops["text/html"] and "ZeroDivisionError" in oops["text/html"]


def test_a_saved_graph_and_dashboard_show_the_end(saved: Any) -> None:
    graph = _display(saved, 4)
    assert graph["text/plain"].startswith("[bg] ✗ graph pipe failed")
    assert "pipe.next" in graph["text/plain"] and "exit status 3" in graph["text/plain"]
    assert 'data-status="done"' in graph["text/html"] and 'data-ok="false"' in graph["text/html"]
    assert 'data-name="next" data-status="failed"' in graph["text/html"]

    assert WIDGET not in graph
    board = _display(saved, 1)
    assert WIDGET in board  # the dashboard stays live: its saved form is a snapshot beside the view
    assert "fetch" in board["text/plain"] and "oops" in board["text/plain"]
    assert board["text/html"].count('class="ttasks-row"') == 4  # fetch, oops and the graph's two
    assert 'data-status="failed"' in board["text/html"]


def test_first_shown_outputs_are_stable_start_forms(tmp_path: Path) -> None:
    nb = _execute(tmp_path, _Reference)
    fetch = _display(nb, 2)
    assert WIDGET not in fetch  # shown first as its start in HTML; its widgets open at the cell's end (an update)
    assert fetch["text/plain"].startswith("[bg] fetch → r started (bash): !while [ ! -e go ]")
    assert 'data-status="started"' in fetch["text/html"] and "ttasks-tail" not in fetch["text/html"]
    assert "0s" not in fetch["text/html"]  # no clock: the same text on every run
    graph = _display(nb, 4)
    assert 'data-status="started"' in graph["text/html"] and 'data-status="pending"' in graph["text/html"]
    assert "[bg] dashboard" in _display(nb, 1)["text/html"]


def test_nbconvert_shows_the_fallback_where_no_widget_state_was_saved(saved: Any) -> None:
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(saved)
    assert 'data-task="fetch"' in page and 'data-status="succeeded"' in page
    assert "fetched &lt;b&gt;7&lt;/b&gt; rows" in page


def test_an_end_delivered_while_idle_updates_the_card_under_its_own_cell(tmp_path: Path) -> None:
    k = start_kernel(widgets=True)
    try:
        go = tmp_path / "go"
        shown = k.run(f"%bg -n late -o v !while [ ! -e {go} ]; do sleep 0.05; done; echo late")
        card_cell = shown.messages[0]["parent_header"]["msg_id"]
        display_id = shown.display_ids[0]
        k.run("1 + 1")  # another cell ran since: the kernel's own parent is now that cell's
        go.touch()
        deadline = time.monotonic() + 30

        def is_update(m: dict[str, Any]) -> bool:
            return (m["msg_type"] == "update_display_data"
                    and m["content"].get("transient", {}).get("display_id") == display_id)

        msg = k.wait_for_idle_message(is_update, max(1.0, deadline - time.monotonic()))
        assert msg["parent_header"]["msg_id"] == card_cell
        data = msg["content"]["data"]
        assert WIDGET not in data and "[bg] ✓ late finished in" in data["text/plain"]
        assert 'data-status="succeeded"' in data["text/html"]
        assert k.value("v.output") == "'late\\n'"
    finally:
        stop_kernel(k)


def test_a_dashboard_saved_form_follows_ends_delivered_while_idle(tmp_path: Path) -> None:
    """Snapshots are at most one a second, and the last end within that second is in a last snapshot."""
    k = start_kernel(widgets=True)
    try:
        board = k.run("%bg --dashboard")
        display_id = board.display_ids[0]
        go = tmp_path / "go"
        k.run(f"%bg -n one !while [ ! -e {go} ]; do sleep 0.02; done\n"
              f"%bg -n two !while [ ! -e {go} ]; do sleep 0.02; done; sleep 0.3")
        k.drain_idle(0.2)
        go.touch()  # one ends at once, two 0.3 s later: two deliveries while idle, within a second

        def both_ended(m: dict[str, Any]) -> bool:
            if m["msg_type"] != "update_display_data" or m["content"]["transient"].get("display_id") != display_id:
                return False
            return m["content"]["data"]["text/html"].count('data-status="succeeded"') == 2

        msg = k.wait_for_idle_message(both_ended, 30)
        assert msg["parent_header"]["msg_id"] == board.messages[0]["parent_header"]["msg_id"]
        assert WIDGET in msg["content"]["data"]  # the dashboard stays live beside its snapshot
    finally:
        stop_kernel(k)
