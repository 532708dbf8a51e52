"""A notebook run headless saves the views as its waits left them: final cards, graph and dashboard.

Runs a small notebook with nbclient (``store_widget_state=True``, as ``notebooks/run.py
--save`` does) and reads the saved widget state and outputs: what GitHub or nbviewer would show.
"""
from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(120)

CELLS = [
    "%load_ext ttasks_ipy",
    # a task that streams on through the waits below: the views of the waited ones must not wait for it
    "%bg -n noisy !for i in $(seq 1 400); do echo line $i; sleep 0.05; done",
    "%bg -n short -o r !sleep 0.3; echo done",
    "%bg --wait short --timeout 30",
    "%%bgraph g\na: !sleep 0.3; echo a\nb after a: !sleep 0.2; echo b",
    "%bg --wait g --timeout 30",
    "%bg --dashboard",
    "%bg --cancel noisy\n%bg --wait noisy --timeout 30",
]


def _saved(cells: list[str]) -> tuple[list[str], list[str]]:
    """(the HTML values in the saved widget state, the HTML of the saved display outputs)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=60, kernel_name="python3", store_widget_state=True).execute()
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value", "") for m in state.values() if isinstance(m["state"].get("value"), str)]
    shown = [o.data.get("text/html", "") for c in nb.cells for o in c.outputs if o.output_type == "display_data"]
    return values, shown


def _status(values: list[str], pattern: str) -> list[str]:
    return [s for v in values for s in re.findall(pattern, v)]


def test_a_headless_run_saves_what_its_waits_saw_end():
    values, shown = _saved(CELLS)
    # a card's end replaces its display, in the cell that waited for it as well: the saved output is the end
    # (its widgets opened once its own cell was answered, between two cells, where nbclient reads nothing)
    assert _status(shown, r'data-status="(\w+)" data-task="short"') == ["succeeded"]
    assert _status(shown, r'data-status="(\w+)" data-task="noisy"') == ["cancelled"]
    assert _status(values, r'class="ttasks-graph-body" data-status="(\w+)"') == ["done"]
    assert _status(values, r'data-name="(\w)" data-status="(\w+)"') == [("a", "succeeded"), ("b", "succeeded")]
    # nothing runs after the last wait: the dashboard lists every task as it ended
    rows = _status(values, r'class="ttasks-row" data-id="\d+" data-status="(\w+)"')
    assert sorted(rows) == ["cancelled", "succeeded", "succeeded", "succeeded"], rows
