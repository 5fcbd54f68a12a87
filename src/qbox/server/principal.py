"""Who is calling: the principal every route and service checks against.

An API key or a dashboard session resolves to one of these (see
``services/keys.py`` and ``services/web_sessions.py``); services take it to
decide what the caller may see and change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qbox.core.scopes import grants


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind the key and what the key may do."""

    user_id: str
    email: str
    role: str
    api_key_id: str | None
    # The key's scopes as granted (shown to the caller) …
    scopes: tuple[str, ...]
    # … and what they amount to for this user's role (what is enforced).
    effective: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may(self, scope: str) -> bool:
        return grants(self.effective, scope)


@dataclass(frozen=True)
class HostCredential:
    """What a joined host presented (``Authorization: Bearer qbh_…``), not yet looked up:
    the heartbeat and certificate services find its host, or refuse it."""

    secret: str
