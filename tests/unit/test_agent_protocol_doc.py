"""docs/agent-protocol.md is checked against the protocol's models (qbox.protocol).

Derived from the models, not kept by hand: every body the package defines has
each of its wire names in the document, and each shape block the document
gives (a "`Name`:" line and a fenced block) lists exactly its model's members.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import qbox.protocol
from qbox.protocol.wire import Wire

DOC = (Path(__file__).resolve().parents[2] / "docs" / "agent-protocol.md").read_text()
# "`SandboxSpec`:" then a fenced block: the members of that body.
_BLOCK = re.compile(r"^`(\w+)`:\n```\n(.*?)\n```", re.S | re.M)
# A member named in a block: a quoted name followed by ":" or "?:" (values never are).
_MEMBER = re.compile(r'"(\w+)"\??:')


def _models() -> dict[str, type[Wire]]:
    found: dict[str, type[Wire]] = {}
    for module in pkgutil.iter_modules(qbox.protocol.__path__):
        loaded = importlib.import_module(f"qbox.protocol.{module.name}")
        for name, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, Wire) and value is not Wire and value.__module__ == loaded.__name__:
                found[name] = value
    return found


MODELS = _models()


def _wire_names(model: type[Wire]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_the_package_is_found() -> None:
    assert {"SandboxSpec", "ExecRequest", "CommandStatus", "BuildRequest", "Context"} <= set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_member_of_every_body_is_documented(name: str) -> None:
    missing = {member for member in _wire_names(MODELS[name])
               if not re.search(rf"\b{member}\b", DOC)}
    assert missing == set(), f"{name}: document {sorted(missing)} in docs/agent-protocol.md"


def test_each_shape_block_lists_exactly_its_models_members() -> None:
    blocks = dict(_BLOCK.findall(DOC))
    assert {"SandboxSpec", "ExecSpec", "CommandStatus", "BuildRequest", "FileStat"} <= set(blocks)
    for name, text in blocks.items():
        assert name in MODELS, f"docs/agent-protocol.md shows {name}, which qbox.protocol lacks"
        members = _wire_names(MODELS[name])
        named = set(_MEMBER.findall(text))
        quoted = set(re.findall(r'"(\w+)"', text))
        assert named <= members, f"{name}: the document has {sorted(named - members)} too"
        assert members <= quoted, f"{name}: the document lacks {sorted(members - quoted)}"
