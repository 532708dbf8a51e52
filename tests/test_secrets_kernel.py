"""No piece of the key reaches the user, from a kernel: notices, ``h.error``, ``%bg --log``, ``--list``, cards, logs.

The local server repeats each request in its error (``reflect``), with the key
placed across every point where a message is cut; every message the kernel
sends (while a cell runs and while it is idle), every log record of the
kernel process and every output file is searched for the key and every
8-character piece of it.
"""
from __future__ import annotations

import json
import os

import pytest
from conftest import start_kernel, stop_kernel
from llm_server import FakeLLM
from secret_search import assert_no_leak, dir_texts, make_secret, reflect_models

pytestmark = pytest.mark.timeout(180)

KEY = make_secret()

KEEP_LOGS = """
import logging
class _KeepRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []
    def emit(self, record):
        self.lines.append(self.format(record))
_kept_logs = _KeepRecords()
logging.getLogger().addHandler(_kept_logs)
logging.getLogger().setLevel(logging.DEBUG)
"""


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as srv:
        yield srv


@pytest.mark.parametrize("widgets", [False, True], ids=["text", "widgets"])
def test_reflected_key_reaches_no_message_log_or_file(llm, widgets, tmp_path):
    data = tmp_path / "jupyter"  # the ledger's home: searched too
    k = start_kernel(env={"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "echo",
                          "JUPYTER_DATA_DIR": str(data)}, widgets=widgets)
    seen: list[dict] = []
    try:
        k.run(KEEP_LOGS)
        models = reflect_models(len(KEY)) + ["reflect?form=json&status=500&at=295", "401"]
        k.run("%config TTasks.llm_retries = 0")
        k.run(f"models = {models!r}\n"
              "hs = [get_ipython().run_line_magic('bg', f\"-n r{i} --model '{m}' ?tell me\") "
              "for i, m in enumerate(models)]")
        cells = [
            "%bg --wait all --timeout 60",
            "%bg --list",
            "\n".join(f"%bg --log r{i}" for i in range(len(models))),
            "[h.error for h in hs]",
            "[h.traceback for h in hs]",
            "[(h.exception, h.exception.__cause__, h.spec.runner.meta) for h in hs]",
            "hs",
            "print('\\n'.join(_kept_logs.lines))",
            "%bg --history 500",
        ]
        for cell in cells:
            r = k.run(cell, allow_error=True, timeout=90)
            seen += r.messages
            seen += k.drain_idle(0.2)  # notices and card updates sent while idle
        assert k.value("sum(h.status == 'failed' for h in hs), len(hs)") == f"({len(models)}, {len(models)})"
        assert "***" in k.value("hs[0].error")
        out_dir = k.value("str(__import__('ttasks_ipy').kernel.session().executor.output_dir)").strip("'")
        logs = k.run("print(len(_kept_logs.lines))").stdout
        assert int(logs) > 0  # the records were kept (httpx logs every request)
    finally:
        stop_kernel(k)
    texts = {f"message {i} ({m['msg_type']})": json.dumps(m["content"], default=str) for i, m in enumerate(seen)}
    texts.update(dir_texts(out_dir) if os.path.isdir(out_dir) else {})
    ledger = dir_texts(data / "ttasks_ipy")
    assert any(name.endswith("ledger.sqlite") for name in ledger)  # the ledger recorded the tasks
    texts.update(ledger)
    assert_no_leak(texts, KEY)
    # the key did go out, and the server did quote it back
    assert any(r.headers.get("authorization") == f"Bearer {KEY}" for r in llm.requests)
