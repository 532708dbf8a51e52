"""Helpers for the real-browser test: a JupyterLab or Notebook 7 server on 127.0.0.1, Debian's Chromium via Playwright.

Recipe (FIELD-NOTES, "A real browser"): ``jupyter lab --no-browser`` on a
free port with a token, Chromium at ``/usr/bin/chromium`` (``.ci/install-browser.sh``),
a fresh workspace per run (``?reset``), selectors scoped to the visible
notebook, and the kernel status text to know when it is idle.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: the visible notebook panel: every selector is scoped to it
NB = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def missing() -> str | None:
    """Why the browser test cannot run here, or None if it can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: run `bash .ci/install-browser.sh` as root"
    for module in ("playwright", "jupyterlab", "notebook"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed: pip install -e '.[test]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the frontends checked: the module that serves each
FRONTENDS = {"jupyterlab": "jupyterlab", "notebook7": "notebook"}


class Lab:
    """A running JupyterLab or Notebook 7 server (``frontend``: a key of ``FRONTENDS``)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, token: str, root: Path, log: Path,
                 frontend: str = "jupyterlab") -> None:
        self.frontend = frontend
        self.proc = proc
        self.port = port
        self.token = token
        self.root = root
        self.log = log

    def url(self, notebook: str) -> str:
        """The address that opens ``notebook`` (in JupyterLab, in a fresh workspace)."""
        if self.frontend == "notebook7":
            return f"http://127.0.0.1:{self.port}/notebooks/{notebook}?token={self.token}"
        return f"http://127.0.0.1:{self.port}/lab/workspaces/t{secrets.token_hex(4)}/tree/{notebook}?token={self.token}&reset"

    def api(self, path: str) -> Any:
        """GET ``/api/<path>`` as JSON."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def kernels(self) -> list[dict[str, Any]]:
        """The server's kernels (``/api/kernels``), asked again (bounded) while the server cannot list them.

        jupyter_server lists a kernel one turn of its loop before it gives the kernel its
        ``last_activity`` (``start_kernel`` awaits the kernel's task first); a listing in between
        fails with 500 (``isoformat(None)``). Another turn later the listing is whole.
        """
        for _ in range(50):
            try:
                return self.api("kernels")
            except urllib.error.HTTPError as e:
                if e.code != 500:
                    raise
            time.sleep(0.1)  # the server's loop has no event for this: ask again
        return self.api("kernels")


@contextmanager
def jupyter_lab(root: Path, log: Path, timeout: float = 60, frontend: str = "jupyterlab") -> Iterator[Lab]:
    """Serve ``root`` with JupyterLab or Notebook 7 on 127.0.0.1; stop it (and its kernels) afterwards."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = root.parent / (root.name + "-settings")
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True, exist_ok=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = dict(
        os.environ,
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(root.parent / (root.name + "-workspaces")),
    )
    cmd = [
        sys.executable, "-m", FRONTENDS[frontend], "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
        "--ServerApp.open_browser=False",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    lab = Lab(proc, port, token, root, log, frontend)
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}; see {log}")
            try:
                lab.api("status")
                break
            except OSError:
                if time.monotonic() > end:
                    raise TimeoutError(f"jupyter lab did not answer /api/status in {timeout}s; see {log}") from None
                time.sleep(0.2)  # polling a server that is starting: there is no event to await
        yield lab
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server we started and its process group (its kernels), by id."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def copy_notebook(src: Path, root: Path) -> str:
    """Copy ``src`` into the server's root without its saved outputs (what the page shows is this run's);
    returns its name there."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("widgets", None)
    (root / src.name).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return src.name


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "FRONTENDS", "NB", "Lab", "copy_notebook", "jupyter_lab", "missing"]
