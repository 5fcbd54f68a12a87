"""The code → class table is the hierarchy itself: codes unique, every documented code mapped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox.core import errors
from qbox.core.error_codes import ERROR_CLASSES_BY_CODE, error_from_wire
from qbox.core.errors import QboxError

API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def subclasses(root: type[QboxError]) -> Iterator[type[QboxError]]:
    for cls in root.__subclasses__():
        yield cls
        yield from subclasses(cls)


def declared() -> list[type[QboxError]]:
    """Every error class that declares a code of its own (client-side ones too)."""
    return [cls for cls in subclasses(QboxError) if "code" in vars(cls)]


def documented_codes() -> list[tuple[int, str]]:
    """(status, code) from the status table under ``## Errors`` in docs/api.md."""
    section = API_DOC.read_text().split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| (.+) \|$", section, re.MULTILINE)
    # A code is a backticked snake_case word before any parenthesis of explanation.
    return [
        (int(status), code)
        for status, cell in rows
        for code in re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cell))
    ]


def test_codes_are_unique_across_the_hierarchy() -> None:
    codes = [cls.code for cls in declared()]
    assert len(codes) == len(set(codes)), sorted(code for code in codes if codes.count(code) > 1)


def test_every_wire_error_is_in_the_table_and_nothing_client_side_is() -> None:
    wire = {cls for cls in declared() if cls.status != 0 and cls.__module__ == errors.__name__}
    assert set(ERROR_CLASSES_BY_CODE.values()) == wire
    assert all(ERROR_CLASSES_BY_CODE[cls.code] is cls for cls in wire)
    for client_side in (errors.TransportError, errors.CommandExitError, errors.TemplateBuildError):
        assert client_side.code not in ERROR_CLASSES_BY_CODE


WIRE_CLASSES = sorted(set(ERROR_CLASSES_BY_CODE.values()), key=lambda cls: cls.code)


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda cls: cls.__name__)
def test_each_wire_error_comes_back_as_its_class(cls: type[QboxError]) -> None:
    sent = cls("what happened", details={"sandboxId": "sb_1"})
    received = error_from_wire(cls.status, sent.to_wire(), request_id="req_1")
    assert type(received) is cls
    assert (received.code, received.status, received.message) == (cls.code, cls.status, "what happened")
    assert received.details["sandboxId"] == "sb_1"


def test_the_documented_error_table_is_read() -> None:
    assert (404, "sandbox_not_found") in documented_codes()
    assert len(documented_codes()) >= 20


@pytest.mark.parametrize(("status", "code"), documented_codes(), ids=str)
def test_every_documented_code_maps_to_its_class(status: int, code: str) -> None:
    cls = ERROR_CLASSES_BY_CODE[code]
    assert (cls.code, cls.status) == (code, status)
    assert type(error_from_wire(status, {"error": {"code": code, "message": "m"}})) is cls
