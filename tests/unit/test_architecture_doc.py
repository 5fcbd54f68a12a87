"""docs/architecture.md names modules and functions; each must still exist where it says."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
SRC = ROOT / "src" / "qbox"

# `server/services/lifecycle.py`, `agent/images/`, `sdk/_*_ops.py`; optionally followed by a name
# defined there (`SandboxManager.create` after `agent/sandboxes.py`).
_PATH = re.compile(r"`((?:[a-z_*]+/)+(?:[a-z_*]+\.py)?)`(?:\s+`([A-Za-z_]+)(?:\.[a-z_]+)?`)?")


def named_paths(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in _PATH.finditer(text)]


def _exists(rel: str) -> bool:
    for base in (SRC, ROOT):
        if "*" in rel:
            if list(base.glob(rel)):
                return True
        elif (base / rel).exists():
            return True
    return False


def test_every_module_the_map_names_exists() -> None:
    missing = [rel for rel, _ in named_paths(DOC.read_text()) if not _exists(rel)]
    assert missing == []


def test_every_name_given_after_a_module_is_defined_in_it() -> None:
    absent = []
    for rel, name in named_paths(DOC.read_text()):
        if name and rel.endswith(".py") and "*" not in rel:
            source = (SRC / rel).read_text()
            if not re.search(rf"^\s*(?:class|def|async def)\s+{name}\b|^{name}\s*[:=]", source, re.M):
                absent.append(f"{rel}: {name}")
    assert absent == []


def test_the_checker_sees_what_the_map_names() -> None:
    found = named_paths("the boot task in `server/services/sandbox_startup.py` `SandboxBoots.start`, "
                        "and `agent/nowhere.py`")
    assert found == [("server/services/sandbox_startup.py", "SandboxBoots"), ("agent/nowhere.py", None)]
    assert not _exists("agent/nowhere.py") and _exists("server/services/sandbox_startup.py")
    assert len(named_paths(DOC.read_text())) > 40
