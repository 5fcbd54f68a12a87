"""Identifiers: a type prefix and a random, URL- and path-safe body; and each kind's format.

A path id that does not have its kind's format names nothing: the control
plane answers 404 for it at the edge (``PATH_ID_FORMATS``), before any lookup
or internal call.
"""

from __future__ import annotations

import re
import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
SANDBOX_ID_RE = re.compile(r"^sb_[0-9a-z]{8,40}$")
# tpl_<template name> (TEMPLATE_NAME_RE, with room for a longer scheme); the column holds 80.
TEMPLATE_ID_RE = re.compile(r"^tpl_[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$")
API_KEY_ID_RE = re.compile(r"^key_[0-9a-z]{8,40}$")
USER_ID_RE = re.compile(r"^usr_[0-9a-z]{8,40}$")
# Minted by the agent's interpreter: ctx_ + 16 hex digits.
CONTEXT_ID_RE = re.compile(r"^ctx_[0-9a-z]{1,40}$")
PID_RE = re.compile(r"^[1-9][0-9]{0,9}$")
HOST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JOIN_TOKEN_ID_RE = re.compile(r"^jt_[0-9a-z]{8,40}$")
# Any other path parameter: printable, and nothing a URL or a path would read as structure.
PLAIN_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.~+=:@-]{1,128}$")

PATH_ID_FORMATS: dict[str, re.Pattern[str]] = {
    "sandbox_id": SANDBOX_ID_RE,
    "template_id": TEMPLATE_ID_RE,
    "key_id": API_KEY_ID_RE,
    "user_id": USER_ID_RE,
    "context_id": CONTEXT_ID_RE,
    "pid": PID_RE,
    "host_id": HOST_ID_RE,
    "token_id": JOIN_TOKEN_ID_RE,
}


def _random_body(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 20) -> str:
    return f"{prefix}_{_random_body(length)}"


def new_sandbox_id() -> str:
    return new_id("sb")


def template_id_for(name: str) -> str:
    return f"tpl_{name}"


def is_sandbox_id(value: str) -> bool:
    return SANDBOX_ID_RE.fullmatch(value) is not None


def is_path_id(param: str, value: str) -> bool:
    """Whether ``value`` has the format of path parameter ``param`` (any other: a plain segment)."""
    return PATH_ID_FORMATS.get(param, PLAIN_SEGMENT_RE).fullmatch(value) is not None
