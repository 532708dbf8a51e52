"""Shared fixtures: a real IPython kernel (jupyter_client) with ttasks_ipy loaded."""
from __future__ import annotations

import os
import queue
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

#: the suite never writes into the user's own Jupyter data directory (the ledger's default home):
#: kernels and notebooks started by tests inherit this
os.environ["JUPYTER_DATA_DIR"] = tempfile.mkdtemp(prefix="ttasks-test-jupyter-data-")


@dataclass
class Reply:
    """What one executed cell produced."""

    stdout: str = ""
    stderr: str = ""
    texts: list[str] = field(default_factory=list)  # text/plain of display_data and execute_result
    display_ids: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0

    @property
    def all_text(self) -> str:
        return self.stdout + self.stderr + "\n".join(self.texts)


class Kernel:
    """A live kernel: run cells, read what arrives while it is idle."""

    def __init__(self, km: Any, kc: Any) -> None:
        self.km = km
        self.kc = kc

    def run(self, code: str, timeout: float = 30, allow_error: bool = False) -> Reply:
        """Execute ``code`` and collect its iopub messages until the kernel is idle again."""
        self.drain_idle(0)
        started = time.monotonic()
        msg_id = self.kc.execute(code, store_history=True)
        reply = Reply()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell did not finish in {timeout}s: {code[:80]!r}")
            msg = self.kc.get_iopub_msg(timeout=left)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            reply.messages.append(msg)
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                if c["name"] == "stdout":
                    reply.stdout += c["text"]
                else:
                    reply.stderr += c["text"]
            elif t in ("display_data", "execute_result", "update_display_data"):
                reply.texts.append(c["data"].get("text/plain", ""))
                did = c.get("transient", {}).get("display_id")
                if did:
                    reply.display_ids.append(did)
            elif t == "error":
                reply.error = c
            elif t == "status" and c["execution_state"] == "idle":
                break
        reply.duration = time.monotonic() - started
        # the shell reply, so the next execute starts clean
        self.kc.get_shell_msg(timeout=10)
        if reply.error and not allow_error:
            tb = "\n".join(reply.error["traceback"])
            raise AssertionError(f"cell raised {reply.error['ename']}: {reply.error['evalue']}\n{tb}")
        return reply

    def value(self, expr: str, timeout: float = 30) -> str:
        """The text/plain of ``expr`` evaluated in the kernel."""
        r = self.run(expr, timeout)
        return r.texts[-1] if r.texts else ""

    def drain_idle(self, timeout: float) -> list[dict[str, Any]]:
        """Messages that arrive while no cell runs (first one waited for up to ``timeout``)."""
        msgs = []
        wait = timeout
        while True:
            try:
                msgs.append(self.kc.get_iopub_msg(timeout=wait))
            except queue.Empty:
                return msgs
            wait = 0.05

    def wait_for_idle_message(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """Wait (bounded) for an iopub message sent while idle that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no such message arrived")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if predicate(msg):
                return msg

    def interrupt_busy_cell(
        self, code: str = "import time; time.sleep(60)", timeout: float = 20, expect_error: bool = True
    ) -> str:
        """Run ``code`` after printing a marker, Interrupt it once it runs, return its stdout.

        With ``expect_error`` the cell must end in KeyboardInterrupt; else it must end cleanly.
        """
        msg_id = self.kc.execute("print('blocking', flush=True)\n" + code)
        deadline = time.monotonic() + timeout
        interrupted = False
        errors = []
        out = ""
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out += msg["content"]["text"]
                if "blocking" in msg["content"]["text"] and not interrupted:
                    time.sleep(0.2)  # the marker is printed just before the blocking call: let it begin
                    self.km.interrupt_kernel()
                    interrupted = True
            elif msg["msg_type"] == "error":
                errors.append(msg["content"]["ename"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        self.kc.get_shell_msg(timeout=10)
        assert errors == (["KeyboardInterrupt"] if expect_error else []), errors
        return out

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid


def start_kernel(load: bool = True, env: dict[str, str] | None = None, widgets: bool = False) -> Kernel:
    """A kernel with ttasks_ipy loaded; text views unless ``widgets`` (the widget path has tests of its own)."""
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1", **(env or {})}
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=60)
    k = Kernel(km, kc)
    if load:
        k.run("%load_ext ttasks_ipy" + ("" if widgets else "\n%config TTasks.widgets = False"))
    return k


def stop_kernel(k: Kernel) -> None:
    try:
        k.kc.stop_channels()
    finally:
        k.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel():
    """One kernel with ttasks_ipy loaded, shared by a test module."""
    k = start_kernel()
    yield k
    stop_kernel(k)


@pytest.fixture
def fresh_kernel():
    """A kernel of its own, for tests that kill or shut it down."""
    k = start_kernel()
    yield k
    try:
        stop_kernel(k)
    except Exception:
        pass
