"""The package layout of the design: imports go one way, and no module reaches into another's private names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ttasks_ipy"

#: package -> the packages it may import from (besides itself and the standard library)
ALLOWED = {
    "core": {"core"},
    "syntax": {"syntax", "core"},
    "views": {"views", "core"},
    "kernel": {"kernel", "syntax", "views", "core"},
}
FORBIDDEN_IN_CORE = ("IPython", "ipykernel", "ipywidgets")
#: public API despite the underscore: named tuples' methods, os._exit
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make", "_exit"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else None


def _imported(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, names) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    pkg = list(rel if path.name == "__init__.py" else rel[:-1])
    if path.name == "__init__.py":
        pkg = pkg[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            for a in node.names:
                out.append((node.lineno, a.name, ()))
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path: Path) -> None:
    layer = _layer(path)
    for line, mod, _ in _imported(path):
        parts = mod.split(".")
        if layer == "core":
            assert parts[0] not in FORBIDDEN_IN_CORE, f"{path.name}:{line} imports {mod}"
        if parts[0] != "ttasks_ipy" or len(parts) < 2 or layer is None:
            continue
        target = parts[1]
        if target in ALLOWED:
            assert target in ALLOWED[layer], f"{path.relative_to(PACKAGE)}:{line}: {layer} may not import {mod}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_of_other_modules(path: Path) -> None:
    """``from x import _name`` and ``obj._name`` on another module's objects are not used."""
    for line, mod, names in _imported(path):
        if mod.startswith("ttasks_ipy"):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{path.relative_to(PACKAGE)}:{line} imports private {private} from {mod}"
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if node.attr in PUBLIC_UNDERSCORED:
                continue
            # another object's private attribute: allowed only for names this module defines itself
            assert _defined_here(tree, node.attr), (
                f"{path.relative_to(PACKAGE)}:{node.lineno} reaches into ._{node.attr[1:]} of another object"
            )


def _defined_here(tree: ast.AST, attr: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == attr:
            return True
        if isinstance(node, ast.Attribute) and node.attr == attr and isinstance(node.value, ast.Name) \
                and node.value.id == "self" and isinstance(getattr(node, "ctx", None), ast.Store):
            return True
        if isinstance(node, ast.arg) and node.arg == attr:
            return True
        if isinstance(node, ast.Constant) and node.value == attr:  # __slots__ entries
            return True
    return False
