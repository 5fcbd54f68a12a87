"""Identifiers: a type prefix and a random, URL- and path-safe body."""

from __future__ import annotations

import re
import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
SANDBOX_ID_RE = re.compile(r"^sb_[0-9a-z]{8,40}$")


def _random_body(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 20) -> str:
    return f"{prefix}_{_random_body(length)}"


def new_sandbox_id() -> str:
    return new_id("sb")


def template_id_for(name: str) -> str:
    return f"tpl_{name}"


def is_sandbox_id(value: str) -> bool:
    return bool(SANDBOX_ID_RE.match(value))
