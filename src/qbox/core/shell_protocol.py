"""The shell WebSocket's query and client frames (WIRE_PROTOCOL §6), parsed once.

The control plane checks them to refuse before it troubles a host; the agent
parses the same frames, which the control plane forwards verbatim. One set of
rules for both, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qbox.core import json_input
from qbox.core.errors import ValidationError

MAX_DIMENSION = 1000
MAX_COMMAND_CHARS = 64 * 1024
MAX_USER_CHARS = 64


@dataclass(frozen=True)
class ConsoleSize:
    """A terminal's size in character cells."""

    cols: int
    rows: int


DEFAULT_SIZE = ConsoleSize(80, 24)


@dataclass(frozen=True)
class ShellParams:
    size: ConsoleSize
    command: str | None
    user: str | None


@dataclass(frozen=True)
class Input:
    data: bytes


@dataclass(frozen=True)
class Resize:
    size: ConsoleSize


class BadFrame(ValueError):
    """A client frame that is not one of the protocol's (closes with 1007)."""


def _query_dimension(raw: str, name: str, fields: dict[str, str]) -> int:
    """A query parameter is text: its digits are the number."""
    return _dimension(int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else None, name, fields)


def _dimension(value: object, name: str, fields: dict[str, str]) -> int:
    """A JSON number, strictly: ``"80"`` and ``true`` are not sizes."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIMENSION:
        fields[name] = f"must be an integer from 1 to {MAX_DIMENSION}"
        return 0
    return value


def parse_params(query: Mapping[str, str]) -> ShellParams:
    """cols/rows (default 80×24, each 1..1000), and the optional command and user."""
    fields: dict[str, str] = {}
    cols = _query_dimension(query.get("cols", str(DEFAULT_SIZE.cols)), "cols", fields)
    rows = _query_dimension(query.get("rows", str(DEFAULT_SIZE.rows)), "rows", fields)
    command, user = query.get("command"), query.get("user")
    if command is not None and (not command.strip() or "\0" in command or len(command) > MAX_COMMAND_CHARS):
        fields["command"] = f"must be a non-empty command line of at most {MAX_COMMAND_CHARS} characters, without NUL"
    if user is not None and len(user) > MAX_USER_CHARS:
        fields["user"] = f"must be at most {MAX_USER_CHARS} characters"
    if fields:
        raise ValidationError.for_fields(fields)
    return ShellParams(ConsoleSize(cols, rows), command, user or None)


def parse_frame(message: Mapping[str, Any]) -> Input | Resize | None:
    """A received ASGI WebSocket message as an action; None for a disconnect. Raises BadFrame."""
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("bytes") is not None:
        return Input(message["bytes"])
    try:
        frame = json_input.loads((message.get("text") or "").encode("utf-8", "surrogatepass"))
    except ValidationError as exc:
        raise BadFrame(f"a text frame must be a JSON object ({exc.message})") from None
    if not isinstance(frame, dict):
        raise BadFrame("a text frame must be a JSON object")
    if frame.get("type") == "input" and isinstance(frame.get("data"), str):
        return Input(frame["data"].encode())
    if frame.get("type") == "resize":
        fields: dict[str, str] = {}
        cols = _dimension(frame.get("cols"), "cols", fields)
        rows = _dimension(frame.get("rows"), "rows", fields)
        if fields:
            raise BadFrame(f"resize needs cols and rows from 1 to {MAX_DIMENSION}")
        return Resize(ConsoleSize(cols, rows))
    raise BadFrame('a text frame is {"type":"input","data":…} or {"type":"resize","cols":…,"rows":…}')
