"""API key scopes and what each role may hold. ``*`` grants every scope the user's role allows."""

from __future__ import annotations

from collections.abc import Iterable

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

ROLES = ("admin", "member")
# Hosts and the audit log are for operators; members never hold those scopes,
# whatever their keys say.
ADMIN_ONLY_SCOPES = frozenset({"audit:read", "hosts:read", "hosts:write"})
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(ALL_SCOPES),
    "member": frozenset(ALL_SCOPES) - ADMIN_ONLY_SCOPES,
}


def grants(held: Iterable[str], required: str) -> bool:
    held = set(held)
    return WILDCARD in held or required in held


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    return [s for s in scopes if s != WILDCARD and s not in ALL_SCOPES]


def effective_scopes(key_scopes: Iterable[str], role: str) -> frozenset[str]:
    """What a key can really do: its scopes, cut to what its user's role allows."""
    allowed = ROLE_SCOPES.get(role, frozenset())
    key_scopes = set(key_scopes)
    if WILDCARD in key_scopes:
        return allowed
    return frozenset(key_scopes) & allowed
