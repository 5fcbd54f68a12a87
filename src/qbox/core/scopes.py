"""API key scopes. ``*`` grants every scope."""

from __future__ import annotations

ALL_SCOPES: tuple[str, ...] = (
    "api-keys:read",
    "api-keys:write",
    "audit:read",
    "files:read",
    "files:write",
    "hosts:read",
    "hosts:write",
    "sandboxes:create",
    "sandboxes:delete",
    "sandboxes:execute",
    "sandboxes:read",
    "templates:read",
    "templates:write",
)
WILDCARD = "*"


def grants(held: list[str] | tuple[str, ...] | frozenset[str], required: str) -> bool:
    return WILDCARD in held or required in held


def unknown_scopes(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s != WILDCARD and s not in ALL_SCOPES]
