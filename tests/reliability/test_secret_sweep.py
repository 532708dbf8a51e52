"""Reliability: every offset of the key in a reflected error, for each form, auth header and status.

Run with ``TTASKS_RELIABILITY=1 .venv/bin/python -m pytest tests/reliability -o addopts=""``.
The normal run has the reduced form of this sweep (``tests/test_secrets.py``).
About 1,300 prompts per auth header against the local server.
"""
from __future__ import annotations

import logging
import os

import pytest
from llm_server import FakeLLM
from secret_search import (
    REFLECT_CUTS,
    Events,
    assert_no_leak,
    everything,
    make_secret,
    reflect_models,
    reflect_settings,
    sweep,
)

from ttasks_ipy.core import Executor
from ttasks_ipy.core.runners.prompt import PromptFailed

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not os.environ.get("TTASKS_RELIABILITY"), reason="set TTASKS_RELIABILITY=1 to run"),
]


@pytest.fixture(scope="module")
def server():
    with FakeLLM() as srv:
        yield srv


@pytest.mark.parametrize("auth", ["bearer", "azure", "header"])
@pytest.mark.parametrize("form", sorted(REFLECT_CUTS))
def test_every_offset_of_the_key(server, monkeypatch, caplog, tmp_path, auth, form):
    caplog.set_level(logging.DEBUG, logger="ttasks_ipy")
    key, header_secret = make_secret(), make_secret("hdr-", 32)
    settings, secrets = reflect_settings(server.base_url, monkeypatch, auth, key, header_secret)
    models = reflect_models(len(secrets[0]), full=True, forms=[form])
    if form == "json":
        models += [m.replace("form=json", "form=json&status=500") for m in models]
    ex = Executor(max_workers=64, output_dir=tmp_path)
    try:
        events = Events(ex)
        tasks = sweep(ex, settings, models, timeout=300)
        assert all(t.status == "failed" and isinstance(t.exception, PromptFailed) for t in tasks)
        assert_no_leak(everything(ex, tasks, events, caplog), *secrets)
    finally:
        ex.shutdown()
