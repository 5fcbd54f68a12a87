"""Layers import downward only (ARCHITECTURE.md, "Layout"); no import circles; no big modules.

The import graph counts every import a reader would follow: top-level ones,
ones inside functions and ones under ``if TYPE_CHECKING:`` alike. A circle
hidden in a function is still a circle: the two modules cannot be understood
(or split) one without the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "qbox"
MAX_MODULE_LINES = 500

# package prefix -> qbox packages it must not import
FORBIDDEN = {
    "qbox.core": ("qbox.server", "qbox.agent", "qbox.sdk", "qbox.cli", "qbox.protocol"),
    "qbox.protocol": ("qbox.server", "qbox.agent", "qbox.sdk", "qbox.cli"),
    "qbox.sdk": ("qbox.server", "qbox.agent", "qbox.cli"),
    "qbox.agent": ("qbox.server", "qbox.sdk", "qbox.cli"),
    "qbox.server": ("qbox.agent", "qbox.sdk", "qbox.cli"),
    "qbox.server.services": ("qbox.server.http", "qbox.server.app"),
    "qbox.server.db": ("qbox.server.http", "qbox.server.services", "qbox.server.app"),
}


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The dotted names ``module`` imports, relative ones made absolute.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a
    module of ours, else ``pkg``.
    """
    known = set(known)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in known else base)
    return names


def _owning_module(name: str, known: Mapping[str, Path]) -> str | None:
    """The module of ours ``name`` lives in (``qbox.a.b.attr`` -> ``qbox.a.b``), if any."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Each module of src/qbox -> the modules of src/qbox it imports."""
    modules = _module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {_owning_module(name, modules) for name in _imported_names(module, path, modules)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def import_circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, iterative), each sorted."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph.get(root, ())))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = lowlink[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.get(target, ()))))
                    break
                if target in on_stack:
                    lowlink[node] = min(lowlink[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return sorted(circles)


def test_the_circle_finder_finds_a_circle_and_passes_a_dag() -> None:
    dag = {"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert import_circles(dag) == []
    looped = {**dag, "c": {"d"}, "e": {"f"}, "f": {"e"}, "g": {"g"}}
    assert import_circles(looped) == [["a", "b", "c", "d"], ["e", "f"]]


def test_the_graph_sees_function_level_relative_and_type_checking_imports(tmp_path: Path) -> None:
    package = tmp_path / "qbox" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n")
    (package / "c.py").write_text("from qbox.pkg.a import f\n")
    known = {"qbox.pkg": package / "__init__.py", **{f"qbox.pkg.{n}": package / f"{n}.py" for n in "abc"}}
    assert _imported_names("qbox.pkg.a", package / "a.py", known) == {"qbox.pkg.b"}
    assert _imported_names("qbox.pkg.b", package / "b.py", known) == {"typing", "qbox.pkg.c"}
    assert _owning_module("qbox.pkg.a.f", known) == "qbox.pkg.a"


def test_no_import_circles() -> None:
    circles = import_circles(import_graph())
    assert circles == [], "modules that import each other (a circle): " + "; ".join(" <-> ".join(c) for c in circles)


def test_layers_import_downward_only() -> None:
    violations = []
    for module, imported in import_graph().items():
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                for name in imported:
                    if any(name == b or name.startswith(b + ".") for b in banned):
                        violations.append(f"{module} imports {name}")
    assert violations == []


def test_no_module_is_over_500_lines() -> None:
    sizes = {module: len(path.read_text().splitlines()) for module, path in _module_files().items()}
    too_big = sorted(f"{module} ({lines})" for module, lines in sizes.items() if lines > MAX_MODULE_LINES)
    assert too_big == [], f"modules over {MAX_MODULE_LINES} lines: " + ", ".join(too_big)


def test_sdk_and_cli_do_not_import_the_server_stack() -> None:
    code = ("import sys, qbox, qbox.sdk, qbox.cli.main; "
            "heavy = [m for m in ('fastapi', 'sqlalchemy', 'uvicorn', 'alembic', 'starlette') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
