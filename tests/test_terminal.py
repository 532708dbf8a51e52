"""Terminal IPython: the same facts as plain text lines, no widget reprs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest


def test_terminal_ipython_gets_plain_text():
    script = (
        "%load_ext ttasks_ipy\n"
        "%bg -n hello -o r !echo hi from bash\n"
        "%bg --wait hello --timeout 30\n"
        "print('output:', r.output.strip())\n"
        "%bg -n broken y = 1 / 0\n"
        "%bg --wait broken --timeout 30\n"
        "%bg --list\n"
        "exit\n"
    )
    env = {**os.environ, "TERM": "dumb"}
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=nocolor"],
        input=script, capture_output=True, text=True, timeout=60, env=env,
    )
    out = proc.stdout
    assert "[bg] hello → r started (bash): !echo hi from bash" in out
    assert "[bg] ✓ hello finished in" in out
    assert "output: hi from bash" in out
    assert "[bg] ✗ broken failed after" in out and "ZeroDivisionError: division by zero" in out
    assert "widget" not in out.lower() and "Traceback" not in out
    assert proc.returncode == 0


class Tmux:
    """Terminal IPython at its real prompt_toolkit prompt, in a tmux pane of its own."""

    def __init__(self, folder) -> None:
        self.name = f"ttasks-{os.getpid()}-{id(self)}"
        self.sock = str(folder / "tmux.sock")
        env = f"IPYTHONDIR={folder / 'ipython'} TERM=xterm-256color"
        cmd = (f"cd {folder} && env {env} {sys.executable} -m IPython --no-banner --colors=nocolor "
               "--HistoryManager.enabled=False --TerminalInteractiveShell.autosuggestions_provider=None")
        self._tmux("new-session", "-d", "-s", self.name, "-x", "160", "-y", "60", cmd)
        self.wait_for(lambda s: "In [1]:" in s, "the first prompt")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name, "-S", "-200")

    def wait_for(self, predicate, what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            if predicate(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not on screen in {timeout}s:\n{s}")
            time.sleep(0.05)

    def type(self, line: str, prompt_after: int) -> str:
        """Type ``line`` and Enter; returns the screen once prompt ``In [prompt_after]:`` is drawn."""
        self._tmux("send-keys", "-t", self.name, "-l", line)
        self._tmux("send-keys", "-t", self.name, "Enter")
        return self.wait_for(lambda s: f"In [{prompt_after}]:" in s, f"prompt {prompt_after} after {line!r}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            raise RuntimeError("tmux is missing under CI: .ci/setup installs it")
        pytest.skip("tmux is not installed")
    t = Tmux(tmp_path)
    yield t
    t.close()


def test_the_real_prompt_delivers_while_it_waits_with_one_notice_and_no_empty_out(tmux):
    tmux.type("%load_ext ttasks_ipy", 2)
    s = tmux.type("%bg -n s1 x = (__import__('time').sleep(0.5), 42)[1]", 3)
    assert "[bg] s1 started (python)" in s and "Out[2]" not in s
    # nothing typed: the notice comes while the prompt waits, above it, once
    s = tmux.wait_for(lambda s: "[bg] ✓ s1 finished" in s, "the notice at the prompt")
    s = tmux.wait_for(lambda s: s.rstrip().endswith("In [3]:"), "the prompt redrawn below the notice")
    assert s.count("s1 finished") == 1
    s = tmux.type("x", 4)
    assert "Out[3]: 42" in s and "NameError" not in s
    # a handle bound by assignment, and a failure said once, in full
    s = tmux.type("h = %bg -n s2 !echo hi; exit 3", 5)
    s = tmux.wait_for(lambda s: "[bg] ✗ s2 failed" in s, "the failure's notice")
    s = tmux.type("h.output", 6)
    assert "Out[5]: 'hi\\n'" in s and s.count("s2 failed") == 1 and "Out[4]" not in s
