"""JSON from outside, parsed strictly: the one parser for request bodies and shell frames.

Strict UTF-8 (no invalid bytes, no lone UTF-16 surrogates from ``\\ud800``
escapes: they cannot be stored, logged or sent back as UTF-8), nesting
bounded before ``json.loads`` recurses, no ``NaN``/``Infinity``, and no
control characters in object keys (keys are names: labels, environment
variables, fields). Every refusal is a ``ValidationError`` naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from qbox.core.errors import ValidationError

MAX_DEPTH = 64
# A JSON string, escapes included; what is left once they are cut out is structure.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_SURROGATE = re.compile("[\ud800-\udfff]")
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")
SURROGATE_MESSAGE = "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def nesting_error(raw: bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``raw`` may not reach ``json.loads``: nested deeper than ``max_depth``, or unbalanced.

    Each round cuts every innermost ``[]``/``{}`` pair out of the brackets
    (strings removed), so valid JSON is empty after as many rounds as it is deep.
    """
    skeleton = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not skeleton:
            return None
        skeleton, cut = _EMPTY_PAIR.subn(b"", skeleton)
        if not cut:
            return "brackets do not balance"
    if not skeleton:
        return None
    return f"nested deeper than {max_depth} levels" if _EMPTY_PAIR.search(skeleton) else "brackets do not balance"


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


# Lone surrogates cannot be encoded (nor stored by PostgreSQL), NUL ends C strings:
# text bound for storage has both as U+FFFD, as a UTF-8 decoder does with invalid bytes.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with every lone surrogate and NUL replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


def printable(text: str) -> str:
    """``text`` safe to show in an error message (surrogates and controls escaped)."""
    if has_surrogate(text) or CONTROL_CHARS.search(text):
        return text.encode("unicode_escape").decode("ascii")
    return text


def text_problems(data: Any) -> dict[str, str]:
    """``{"field.path": problem}`` for lone surrogates anywhere and control characters in keys."""
    fields: dict[str, str] = {}
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if has_surrogate(value):
                fields[".".join(path) or "body"] = SURROGATE_MESSAGE
        elif isinstance(value, dict):
            for key, item in value.items():
                where = ".".join((*path, printable(key)))
                if has_surrogate(key):
                    fields[where] = "key " + SURROGATE_MESSAGE
                elif CONTROL_CHARS.search(key):
                    fields[where] = "keys must not contain control characters"
                else:
                    stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), item) for i, item in enumerate(value))
    return fields


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` as strict JSON; a ``ValidationError`` naming the field otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError.for_fields({"body": f"not valid UTF-8 (byte {exc.start})"},
                                         "request body is not valid UTF-8") from None
    problem = nesting_error(raw, max_depth)
    if problem is not None:
        raise ValidationError.for_fields({"body": problem}, f"request body is not accepted JSON: {problem}")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ValidationError.for_fields({"body": f"malformed JSON: {exc}"},
                                         "request body is not valid JSON") from None
    fields = text_problems(data)
    if fields:
        raise ValidationError.for_fields(fields, "invalid request: " + "; ".join(
            f"{k}: {v}" for k, v in sorted(fields.items())))
    return data


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate (in strings and keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if has_surrogate(value) else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


def loads_stored(text: str | bytes) -> Any:
    """The database's JSON deserializer: a value stored before the edge refused lone surrogates
    reads back with U+FFFD in their place, so a row can always be sent as UTF-8 (never a 500)."""
    data = json.loads(text)
    # Stored JSON is ASCII-escaped: a surrogate, paired or lone, can only be a \\uD800-\\uDFFF escape.
    escaped = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return scrub(data) if re.search(r"\\u[dD][89a-fA-F]", escaped) else data
