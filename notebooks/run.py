"""Run a notebook headless in a real kernel and print what happened, cell by cell.

    python notebooks/run.py [notebooks/quickstart.ipynb] [--save OUT.ipynb]

Exit status 1 if a cell raised.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent


def _text(output: dict) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        plain = data.get("text/plain", "")
        if "application/vnd.jupyter.widget-view+json" in data:
            return plain + "   (a live widget in JupyterLab)\n"
        return plain + "\n"
    if kind == "error":
        return f"{output['ename']}: {output['evalue']}\n"
    return ""


class ReferenceClient(NotebookClient):
    """Records outputs as nbval sees them: display updates are not applied to earlier outputs."""

    def _update_display_id(self, display_id: str, msg: dict) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", nargs="?", default=str(HERE / "quickstart.ipynb"))
    ap.add_argument("--save", help="write the executed notebook here")
    ap.add_argument("--reference", action="store_true",
                    help="record outputs as nbval compares them (display updates not applied)")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args(argv)
    nb = nbformat.read(args.notebook, as_version=4)
    cls = ReferenceClient if args.reference else NotebookClient
    client = cls(nb, timeout=args.timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(Path(args.notebook).parent)}})
    t0 = time.monotonic()
    failed = False
    try:
        client.execute()
    except CellExecutionError:
        failed = True
    for i, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        print(f"── In [{cell.get('execution_count') or ' '}] (cell {i})")
        print("   " + cell.source.replace("\n", "\n   "))
        out = "".join(_text(o) for o in cell.get("outputs", []))
        if out.strip():
            print("   → " + out.rstrip("\n").replace("\n", "\n     "))
    print(f"── {Path(args.notebook).name}: {'FAILED' if failed else 'ran'} in {time.monotonic() - t0:.1f}s")
    if args.save:
        nbformat.write(nb, args.save)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
