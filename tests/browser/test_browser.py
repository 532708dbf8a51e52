"""The widgets in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium driven by Playwright.

Runs ``notebooks/widgets.ipynb`` cell by cell and checks what a person sees:
the progress bar advances, the output tail appears (escaped, stderr told
apart), Cancel turns the card cancelled, the other cards finish, the
dashboard lists them. Screenshots go to ``artifacts/browser/``.

Needs ``/usr/bin/chromium`` (``bash .ci/install-browser.sh`` as root) and the
test extras (``playwright``, ``jupyterlab``). Skipped with the reason when they
are missing, except under CI (``CI`` set) once ``pyproject.toml`` declares
them: then that is a failure.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .lab import CHROMIUM, CHROMIUM_ARGS, NB, Lab, copy_notebook, jupyter_lab, missing

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "widgets.ipynb"
ARTIFACTS = REPO / "artifacts" / "browser"

_why = missing()
if _why and os.environ.get("CI") and "playwright" in (REPO / "pyproject.toml").read_text():
    # once the project declares what this test needs, CI must have it: no silent skip
    raise RuntimeError(f"the browser test cannot run under CI: {_why}")
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""), pytest.mark.timeout(240)]

BODY = ".ttasks-card-body[data-task='{}']"
CARD = NB + " " + BODY


def _row(page: Any, task: str) -> Any:
    """The card's row (HBox): stable while its HTML is replaced by updates."""
    return page.locator(f"{NB} .ttasks-card").filter(has=page.locator(BODY.format(task)))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("lab")
    copy_notebook(NOTEBOOK, root)
    with jupyter_lab(root, ARTIFACTS / "jupyterlab.log") as server:
        yield server


@pytest.fixture(scope="module")
def page(lab: Lab) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
            pg.set_default_timeout(20_000)
            # a first load of JupyterLab on a busy 2-core machine has taken most of a minute
            pg.goto(lab.url(NOTEBOOK.name), timeout=90_000)
            pg.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
            yield pg
        finally:
            browser.close()


def _run_cells(page: Any, n: int) -> None:
    """Shift+Enter through the next ``n`` cells (markdown cells count)."""
    for _ in range(n):
        page.keyboard.press("Shift+Enter")


def _percent(page: Any, task: str) -> float:
    value = page.locator(CARD.format(task)).get_attribute("data-percent")
    return float(value) if value else -1.0


def test_cards_progress_tail_cancel(page: Any) -> None:
    try:
        _cards_progress_tail_cancel(page)
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
        raise


def _cards_progress_tail_cancel(page: Any) -> None:
    from playwright.sync_api import expect

    started = time.monotonic()
    page.locator(f"{NB} .jp-Cell").first.click()  # focus the notebook in command mode
    page.keyboard.press("Escape")
    # markdown, setup, markdown, train, markdown, fit, load, markdown, dashboard
    _run_cells(page, 9)

    train = page.locator(CARD.format("train"))
    expect(train).to_have_attribute("data-status", "running", timeout=30_000)

    # the bar advances (driven by the tqdm-style stderr line)
    page.wait_for_function(
        "sel => { const e = document.querySelector(sel); return e && parseFloat(e.dataset.percent) >= 4 }",
        arg=CARD.format("train"),
    )
    first = _percent(page, "train")
    page.wait_for_function(
        "([sel, p]) => { const e = document.querySelector(sel); return e && parseFloat(e.dataset.percent) >= p }",
        arg=[CARD.format("train"), first + 3],
    )
    bar_width = train.locator(".ttasks-bar").evaluate("e => e.getBoundingClientRect().width")
    assert bar_width > 0

    # the output tail: stdout lines, the \r-rewritten stderr bar on one line, task text escaped
    tail = train.locator(".ttasks-tail")
    expect(tail).to_contain_text("step")
    expect(tail).to_contain_text("<b>not bold</b>")
    assert tail.locator("b").count() == 0
    expect(tail.locator(".ttasks-stderr")).to_have_count(1)
    expect(tail.locator(".ttasks-stderr")).to_contain_text("%|")
    assert "loss" in tail.inner_text()

    # the other cards finish on their own; the dashboard lists every task
    expect(page.locator(CARD.format("fit"))).to_have_attribute("data-status", "succeeded", timeout=20_000)
    expect(page.locator(CARD.format("load"))).to_have_attribute("data-status", "failed")
    expect(page.locator(CARD.format("load")).locator(".ttasks-reason")).to_contain_text("exit status 2")
    dash = page.locator(f"{NB} .ttasks-dashboard-body")
    expect(dash.locator(".ttasks-row")).to_have_count(3)
    train_card = _row(page, "train")
    train_card.scroll_into_view_if_needed()
    expect(tail.locator(".ttasks-stderr")).to_contain_text("%|")  # the bar is drawn (not mid-redraw)
    page.screenshot(path=str(ARTIFACTS / "running.png"), full_page=False)
    train_card.screenshot(path=str(ARTIFACTS / "card-running.png"))

    # Cancel really cancels, and the card says so
    button = train_card.locator("button")
    expect(button).to_be_visible()
    button.click()
    expect(train).to_have_attribute("data-status", "cancelled", timeout=10_000)
    expect(train.locator(".ttasks-reason")).to_contain_text("cancelled")
    expect(button).to_be_hidden()
    expect(dash.locator(".ttasks-row[data-status='cancelled']")).to_have_count(1)
    page.locator(f"{NB} .jp-Cell").nth(3).scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "finished.png"), full_page=False)
    for name in ("train", "fit", "load"):
        _row(page, name).screenshot(path=str(ARTIFACTS / f"card-{name}.png"))
    dash.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    assert time.monotonic() - started < 60


def test_graph_colours(page: Any) -> None:
    try:
        import ttasks_ipy.core.graph  # noqa: F401
    except ImportError:
        pytest.skip("the task graph (issue 4) has not landed: ttasks_ipy.core.graph is missing")
    try:
        _graph_colours(page)
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "failure-graph.png"), full_page=True)
        raise


def _node(page: Any, name: str) -> Any:
    return page.locator(f"{NB} .ttasks-graph-body .ttasks-node[data-name='{name}']")


def _graph_colours(page: Any) -> None:
    from playwright.sync_api import expect

    page.locator(f"{NB} .jp-Cell").nth(9).click()  # the graph's markdown cell, after the cards
    page.keyboard.press("Escape")
    _run_cells(page, 2)
    graph = page.locator(f"{NB} .ttasks-graph-body")
    expect(_node(page, "build")).to_have_attribute("data-status", "running", timeout=15_000)
    running_fill = _node(page, "build").locator("rect").get_attribute("fill")
    expect(_node(page, "deploy")).to_have_attribute("data-status", "pending")
    page.locator(f"{NB} .ttasks-graph").screenshot(path=str(ARTIFACTS / "graph-running.png"))

    expect(graph).to_have_attribute("data-status", "done", timeout=20_000)
    expect(graph).to_have_attribute("data-ok", "false")
    final = {n: _node(page, n).get_attribute("data-status") for n in
             ("build", "lint", "test", "deploy", "report", "notify")}
    assert final == {
        "build": "succeeded", "lint": "succeeded", "test": "failed", "deploy": "blocked",
        "report": "succeeded", "notify": "failed",
    }
    assert _node(page, "build").locator("rect").get_attribute("fill") != running_fill  # the colour changed
    expect(graph).to_contain_text("not ok")
    page.locator(f"{NB} .ttasks-graph").screenshot(path=str(ARTIFACTS / "graph-done.png"))
