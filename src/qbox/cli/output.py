"""Rendering: JSON and YAML for machines, aligned tables and key/value prose for people, error lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import yaml

from qbox.core.errors import QboxError
from qbox.core.timefmt import to_wire

EMPTY = "-"
FORMATS = ("table", "json", "yaml", "prose")
DATA_FORMATS = frozenset({"json", "yaml"})


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_wire(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=_json_default)


def to_json_line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=_json_default)


def to_yaml(data: Any) -> str:
    """The same data as ``to_json`` (datetimes as wire strings), as a YAML document without its last newline."""
    plain = json.loads(json.dumps(data, default=_json_default))
    text: str = yaml.safe_dump(plain, default_flow_style=False, sort_keys=False, allow_unicode=True)
    return text.removesuffix("\n")


def render(data: Any, fmt: str) -> str:
    """``data`` in a data format (json or yaml)."""
    return to_yaml(data) if fmt == "yaml" else to_json(data)


def cell(value: Any) -> str:
    if value is None or value == "":
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or EMPTY
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or EMPTY
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in pairs)


def error_line(error: QboxError) -> str:
    line = f"error: {error.code}: {error.message}"
    if error.request_id:
        line += f" (request {error.request_id})"
    return line


def error_object(error: QboxError, exit_code: int) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    if error.status:
        body["status"] = error.status
    if error.request_id:
        body["requestId"] = error.request_id
    body["exitCode"] = exit_code
    return {"error": body}
