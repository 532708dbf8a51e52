"""A real IPython kernel driven through jupyter_client, as a notebook frontend drives it.

Like ``tests/conftest.py`` (not imported: that module needs pytest), plus what
the benchmarks need: the round-trip time of a cell, every iopub message with
the time it arrived here, and the kernel's pid for psutil.
"""
from __future__ import annotations

import datetime as _dt
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import start_new_kernel


@dataclass
class Cell:
    """What one executed cell produced."""

    code: str
    seconds: float = 0.0  # execute request sent -> status idle received
    stdout: str = ""
    texts: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_text(self) -> str:
        return self.texts[-1] if self.texts else ""


class Kernel:
    """A live kernel: run cells, collect what arrives while it is idle."""

    def __init__(self, load: bool = True) -> None:
        env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=60)
        #: iopub messages that arrived outside any cell we ran: (arrival time.time(), msg)
        self.idle: list[tuple[float, dict[str, Any]]] = []
        if load:
            self.run("%load_ext ttasks_ipy")

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def run(self, code: str, timeout: float = 60, allow_error: bool = False) -> Cell:
        """Execute ``code``; return when the kernel is idle again (and its shell reply is read)."""
        self.collect_idle(0)
        cell = Cell(code)
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code, store_history=True)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell did not finish in {timeout}s: {code[:80]!r}")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                raise TimeoutError(f"cell did not finish in {timeout}s: {code[:80]!r}") from None
            msg["_arrived"] = time.time()
            if msg["parent_header"].get("msg_id") != msg_id:
                self.idle.append((msg["_arrived"], msg))
                continue
            cell.messages.append(msg)
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                cell.stdout += c["text"]
            elif t in ("display_data", "execute_result", "update_display_data"):
                cell.texts.append(c["data"].get("text/plain", ""))
            elif t == "error":
                cell.error = c
            elif t == "status" and c["execution_state"] == "idle":
                break
        cell.seconds = time.perf_counter() - t0
        self.kc.get_shell_msg(timeout=30)
        if cell.error and not allow_error:
            raise RuntimeError(
                f"cell raised {cell.error['ename']}: {cell.error['evalue']}\n" + "\n".join(cell.error["traceback"])
            )
        return cell

    def value(self, expr: str, timeout: float = 60) -> Any:
        """``expr`` evaluated in the kernel, brought back through ``repr`` and ``eval`` (plain data only)."""
        r = self.run(f"print(repr(({expr})))", timeout)
        return eval(r.stdout.strip())  # noqa: S307 - our own repr of plain data

    def collect_idle(self, timeout: float) -> list[tuple[float, dict[str, Any]]]:
        """Read what arrived while no cell ran (waiting up to ``timeout`` for the first message)."""
        got = []
        wait = timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=wait)
            except queue.Empty:
                break
            msg["_arrived"] = time.time()
            got.append((msg["_arrived"], msg))
            wait = 0.0 if wait == 0 else 0.02
        self.idle.extend(got)
        return got

    def wait_idle_message(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """Wait (bounded) for a message, sent while no cell runs, that satisfies ``predicate``."""
        for _, m in self.idle:
            if predicate(m):
                self.idle.remove((m["_arrived"], m))
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the awaited message never arrived")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            msg["_arrived"] = time.time()
            if predicate(msg):
                return msg
            self.idle.append((msg["_arrived"], msg))

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sent_at(msg: dict[str, Any]) -> float:
    """When the kernel sent ``msg`` (its header date), as ``time.time()`` seconds."""
    d = msg["header"]["date"]
    if isinstance(d, str):
        d = _dt.datetime.fromisoformat(d.replace("Z", "+00:00"))
    return d.timestamp()
