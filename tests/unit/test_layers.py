"""Layers import downward only (ARCHITECTURE.md, "Layout"); the light core stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "qbox"

# package prefix -> qbox packages it must not import
FORBIDDEN = {
    "qbox.core": ("qbox.server", "qbox.agent", "qbox.sdk", "qbox.cli"),
    "qbox.sdk": ("qbox.server", "qbox.agent", "qbox.cli"),
    "qbox.agent": ("qbox.server", "qbox.sdk", "qbox.cli"),
    "qbox.server": ("qbox.agent", "qbox.sdk", "qbox.cli"),
    "qbox.server.services": ("qbox.server.http", "qbox.server.app"),
    "qbox.server.db": ("qbox.server.http", "qbox.server.services", "qbox.server.app"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_layers_import_downward_only() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                for name in _imports(path):
                    if any(name == b or name.startswith(b + ".") for b in banned):
                        violations.append(f"{module} imports {name}")
    assert violations == []


def test_sdk_and_cli_do_not_import_the_server_stack() -> None:
    code = ("import sys, qbox, qbox.sdk, qbox.cli.main; "
            "heavy = [m for m in ('fastapi', 'sqlalchemy', 'uvicorn', 'alembic', 'starlette') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
