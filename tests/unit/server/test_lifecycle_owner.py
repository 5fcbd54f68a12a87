"""Only services/lifecycle.py writes a sandbox's status on the control plane (issue 14)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[3] / "src" / "qbox" / "server"
OWNER = SERVER / "services" / "lifecycle.py"


def status_writes(source: str) -> list[str]:
    """Statements that set a sandbox's status: ``Sandbox(status=…)``, ``….status = …`` on
    something named like a sandbox, and ``update(Sandbox)….values(status=…)`` / ``{"status": …}``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Sandbox":
            if any(k.arg == "status" for k in node.keywords):
                found.append(ast.unparse(node))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (isinstance(target, ast.Attribute) and target.attr == "status"
                        and "sandbox" in ast.unparse(target.value).lower()):
                    found.append(ast.unparse(node))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "values" and "update(Sandbox)" in ast.unparse(node.func.value)):
            keys = [k.arg for k in node.keywords]
            keys += [k.value for a in node.args if isinstance(a, ast.Dict)
                     for k in a.keys if isinstance(k, ast.Constant)]
            if "status" in keys or None in keys:  # ``**values`` may carry it
                found.append(ast.unparse(node))
    return found


def test_only_the_lifecycle_module_writes_a_sandboxs_status() -> None:
    writers = {str(path.relative_to(SERVER)): writes for path in sorted(SERVER.rglob("*.py"))
               if path != OWNER and (writes := status_writes(path.read_text()))}
    assert writers == {}
    assert status_writes(OWNER.read_text()), "the owner itself must be seen writing it"


def test_the_check_sees_each_way_of_writing_it() -> None:
    source = (
        "Sandbox(id='x', status='running')\n"
        "sandbox.status = 'killed'\n"
        "update(Sandbox).where(Sandbox.id == i).values(status='failed')\n"
        "update(Sandbox).values({'status': 'failed'})\n"
        "update(Sandbox).values(**values)\n"
        "host.status = 'online'\n"
        "update(Template).values(status='ready')\n"
        "update(Sandbox).values(deadline_at=None)\n"
    )
    assert len(status_writes(source)) == 5
