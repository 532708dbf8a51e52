"""binder/ can run the notebooks: every module they import is installed there.

Binder (repo2docker) installs ``binder/requirements.txt``, then ``binder/postBuild``
installs this package with its dependencies. A notebook importing anything else
would fail there. ``.ci/binder-check`` checks the files against repo2docker itself.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``tqdm>=4.66`` -> ``tqdm``)."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _installed_on_binder() -> set[str]:
    lines = (REPO / "binder" / "requirements.txt").read_text().splitlines()
    wanted = {_name(line) for line in lines if line.strip() and not line.startswith("#")}
    deps = {_name(r) for r in md.requires("ttasks_ipy") or () if "extra ==" not in r}
    return wanted | deps | {"ttasks-ipy"}


def _python(source: str) -> list[str]:
    """The Python a code cell runs: the cell as IPython turns it into Python, and a ``%%bg`` cell's body."""
    first, _, body = source.partition("\n")
    if first.startswith("%%bg ") or first == "%%bg":
        return [] if ("--bash" in first or "--prompt" in first) else [body]
    return [TransformerManager().transform_cell(source)]


def _imports(path: Path) -> set[str]:
    """The top-level modules a notebook imports (in the kernel or in a background cell)."""
    found = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for code in _python(cell.source):
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def test_every_module_a_notebook_imports_is_installed_on_binder():
    dists = md.packages_distributions()
    binder = _installed_on_binder()
    missing = {}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for module in sorted(_imports(path)):
            if module in sys.stdlib_module_names:
                continue
            names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
            if not names & binder:
                missing.setdefault(path.name, []).append(module)
    assert not missing, f"imported by notebooks but not installed on Binder (add to binder/requirements.txt): {missing}"


def test_postbuild_installs_this_package_and_runtime_names_a_supported_python():
    post = (REPO / "binder" / "postBuild").read_text()
    assert 'pip install --no-cache-dir ".' in post
    # a lesson that sends work to Dask needs the package's dask extra there (no notebook imports dask itself)
    if any("--dask" in p.read_text() for p in (REPO / "notebooks").glob("*.ipynb")):
        assert '".[dask]"' in post
    runtime = (REPO / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.(1[0-3])", runtime), runtime
