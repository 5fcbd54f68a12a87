"""Access-control results: API keys, users, audit entries (parsed from the wire like ``_models``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qbox.sdk._models import _int, _opt_str, _required, _str, _time, as_list, as_object, bad_response


def _opt_int(data: dict[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as listed: never its secret (only ``prefix``, enough to recognise it)."""

    id: str
    name: str
    status: str  # active | revoked | expired
    prefix: str = ""
    scopes: tuple[str, ...] = ()
    user_id: str | None = None
    user_email: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_wire(cls, value: Any) -> ApiKeyInfo:
        data = as_object(value, "an API key")
        return cls(
            id=_required(data, "id", "an API key"),
            name=_str(data, "name"),
            status=_str(data, "status"),
            prefix=_str(data, "prefix"),
            scopes=tuple(str(s) for s in as_list(data.get("scopes"), "API key scopes")),
            user_id=_opt_str(data, "userId"),
            user_email=_opt_str(data, "userEmail"),
            created_at=_time(data, "createdAt"),
            expires_at=_time(data, "expiresAt"),
            last_used_at=_time(data, "lastUsedAt"),
            revoked_at=_time(data, "revokedAt"),
            raw=data,
        )


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key and its secret. The server shows the secret this once; it is kept out of ``repr``."""

    key: ApiKeyInfo
    secret: str = field(repr=False)

    @classmethod
    def from_wire(cls, value: Any) -> CreatedApiKey:
        data = as_object(value, "a created API key")
        return cls(
            key=ApiKeyInfo.from_wire(data.get("key")),
            secret=_required(data, "secret", "a created API key"),
        )


@dataclass(frozen=True)
class UserInfo:
    id: str
    email: str
    role: str  # admin | member
    status: str  # active | disabled
    has_password: bool = False
    created_at: datetime | None = None
    disabled_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_wire(cls, value: Any) -> UserInfo:
        data = as_object(value, "a user")
        return cls(
            id=_required(data, "id", "a user"),
            email=_str(data, "email"),
            role=_str(data, "role"),
            status=_str(data, "status"),
            has_password=bool(data.get("hasPassword", False)),
            created_at=_time(data, "createdAt"),
            disabled_at=_time(data, "disabledAt"),
            raw=data,
        )


@dataclass(frozen=True)
class AuditEntry:
    """One audit record. ``outcome`` is the HTTP status the action got; ``hash`` chains it to the previous entry."""

    id: int
    ts: datetime | None
    action: str
    outcome: int
    actor_id: str | None = None
    actor_email: str | None = None
    api_key_id: str | None = None
    source_ip: str | None = None
    target_id: str | None = None
    detail: str = ""
    hash: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def actor(self) -> str | None:
        """Who acted, for people: the email when known, else the user id."""
        return self.actor_email or self.actor_id

    @classmethod
    def from_wire(cls, value: Any) -> AuditEntry:
        data = as_object(value, "an audit entry")
        if data.get("id") is None:
            raise bad_response("an audit entry without 'id'")
        return cls(
            id=_int(data, "id"),
            ts=_time(data, "ts"),
            action=_str(data, "action"),
            outcome=_int(data, "outcome"),
            actor_id=_opt_str(data, "actorId"),
            actor_email=_opt_str(data, "actorEmail"),
            api_key_id=_opt_str(data, "apiKeyId"),
            source_ip=_opt_str(data, "sourceIp"),
            target_id=_opt_str(data, "targetId"),
            detail=_str(data, "detail"),
            hash=_str(data, "hash"),
            raw=data,
        )


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first; pass ``next_cursor`` back as ``cursor`` for the next, older page (``None``: no more)."""

    entries: list[AuditEntry]
    next_cursor: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> AuditPage:
        # A bare array is what other qbox servers answer (WIRE_PROTOCOL §4.14): one page, no cursor.
        data = {"data": value, "nextCursor": None} if isinstance(value, list) else as_object(value, "an audit page")
        return cls(
            entries=[AuditEntry.from_wire(row) for row in as_list(data.get("data"), "the audit entries")],
            next_cursor=_opt_str(data, "nextCursor") or None,
            raw=data,
        )


@dataclass(frozen=True)
class AuditVerification:
    """The result of re-checking the audit log's hash chain."""

    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, value: Any) -> AuditVerification:
        data = as_object(value, "an audit verification")
        if not isinstance(data.get("ok"), bool):
            raise bad_response("an audit verification without a boolean 'ok'")
        return cls(
            ok=data["ok"],
            checked=_int(data, "checked"),
            first_bad_id=_opt_int(data, "firstBadId"),
            reason=_opt_str(data, "reason"),
            raw=data,
        )
