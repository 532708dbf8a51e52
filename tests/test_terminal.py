"""Terminal IPython: the same facts as plain text lines, no widget reprs."""
from __future__ import annotations

import os
import subprocess
import sys


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
