"""Environment variable names, and ``.env`` text parsed into them.

One rule for a name everywhere a user sets sandbox envs (the envs API, a
dotenv upload): ``[A-Za-z_][A-Za-z0-9_]*`` — what a shell can ``export``, and
what the spawn body accepts — with the ``QBOX_`` prefix (any case) reserved
for the variables the platform sets.

``parse`` reads dotenv text as people write it: ``KEY=value`` or
``export KEY=value``; blank lines and ``#`` comments; a `` #`` comment after an
unquoted value; single quotes keep everything literally, double quotes know
``\\n \\r \\t \\" \\\\`` and may span lines; whitespace around keys and
unquoted values is dropped; CRLF line ends read as LF. A line it cannot read
is rejected with its 1-based number and why, and the rest goes on; the last
of a repeated key wins. Pure: no I/O, no limits (the caller caps the text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_PREFIX = "QBOX_"
# Longer names are refused as not names (and never echoed whole in an error).
MAX_KEY_CHARS = 256

_EXPORT = re.compile(r"export[ \t]+")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
# An unquoted value's comment: a '#' after whitespace ("A=#x" is the value "#x").
_COMMENT = re.compile(r"[ \t]#")


def system_envs(sandbox_id: str, template_id: str) -> dict[str, str]:
    """What the platform sets in every sandbox (under the reserved prefix)."""
    return {"QBOX_SANDBOX_ID": sandbox_id, "QBOX_TEMPLATE_ID": template_id}


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a sandbox env var, or None."""
    if len(key) > MAX_KEY_CHARS or not ENV_KEY_RE.fullmatch(key):
        return "invalid name: use letters, digits and _, not starting with a digit"
    if key.upper().startswith(RESERVED_PREFIX):
        return f"the {RESERVED_PREFIX} prefix is reserved for the platform's variables"
    return None


def value_problem(value: str) -> str | None:
    return "values must not contain NUL" if "\0" in value else None


@dataclass(frozen=True)
class Rejection:
    """A line that set nothing: its 1-based number, why, and the key when one was read."""

    line: int
    reason: str
    key: str | None = None


@dataclass
class Dotenv:
    envs: dict[str, str] = field(default_factory=dict)
    # Blank and comment-only lines.
    skipped: int = 0
    rejected: list[Rejection] = field(default_factory=list)


class _Reject(Exception):
    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key


def parse(text: str) -> Dotenv:
    """``text`` (a ``.env`` file's content) as envs, counted skips and rejections."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it starts none
    result = Dotenv()
    index = 0
    while index < len(lines):
        number = index + 1
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            result.skipped += 1
            index += 1
            continue
        try:
            key, value, index = _entry(lines, index)
        except _Reject as rejection:
            result.rejected.append(Rejection(number, rejection.reason, rejection.key))
            index += 1
            continue
        result.envs.pop(key, None)  # the last one wins, in its own place
        result.envs[key] = value
    return result


def _entry(lines: list[str], index: int) -> tuple[str, str, int]:
    """The key and value starting at ``lines[index]``, and the index of the next line."""
    line = lines[index].lstrip(" \t")
    if "\0" in line:
        raise _Reject("the line contains NUL")
    export = _EXPORT.match(line)
    if export:
        line = line[export.end():]
    name, equals, rest = line.partition("=")
    key = name.strip(" \t")
    if not equals:
        raise _Reject("no '=': expected KEY=value")
    if problem := key_problem(key):
        shown = key if len(key) <= MAX_KEY_CHARS and key.isprintable() else None
        raise _Reject(problem, shown)
    if rest.lstrip(" \t")[:1] in ("'", '"'):
        value, after, index = _quoted(lines, index, rest.lstrip(" \t"), key)
        tail = after.strip(" \t")
        if tail and not tail.startswith("#"):
            raise _Reject("unexpected text after the closing quote", key)
        return key, value, index + 1
    comment = _COMMENT.search(rest)
    value = (rest[:comment.start()] if comment else rest).strip(" \t")
    return key, value, index + 1


def _quoted(lines: list[str], index: int, rest: str, key: str) -> tuple[str, str, int]:
    """A quoted value that opens ``rest`` (on ``lines[index]``), maybe over several lines:
    the value, what follows its closing quote, and the index of the line it closed on."""
    quote, text = rest[0], rest[1:]
    out: list[str] = []
    while True:
        position = 0
        while position < len(text):
            char = text[position]
            if char == quote:
                return "".join(out), text[position + 1:], index
            if char == "\\" and quote == '"' and position + 1 < len(text):
                following = text[position + 1]
                out.append(_ESCAPES.get(following, "\\" + following))
                position += 2
                continue
            out.append(char)
            position += 1
        index += 1
        if index >= len(lines) or "\0" in lines[index]:
            raise _Reject("unterminated quoted value", key)
        out.append("\n")
        text = lines[index]

