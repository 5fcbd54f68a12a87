"""API key, user and audit-log operations, written once for sync and async (see ``_steps``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from qbox.core.errors import QboxError
from qbox.core.timefmt import utcnow
from qbox.sdk._api import Api
from qbox.sdk._access_models import ApiKeyInfo, AuditPage, AuditVerification, CreatedApiKey, UserInfo
from qbox.sdk._models import as_list, bad_response
from qbox.sdk._steps import Op

API_KEYS = "/v1/api-keys"
USERS = "/v1/users"
AUDIT = "/v1/audit"


def _path(collection: str, item_id: str, suffix: str = "") -> str:
    # Ids never need escaping; quoting keeps a stray "/" or ".." from reaching another route.
    return f"{collection}/{quote(item_id, safe='')}{suffix}"


def iso(value: datetime) -> str:
    """ISO 8601 with an explicit offset, as the API takes times in bodies and queries. Naive means UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


# --- API keys ---------------------------------------------------------------


def create_api_key(
    api: Api, *, name: str, scopes: Sequence[str], expires_at: datetime | None, user_id: str | None
) -> Op[CreatedApiKey]:
    if isinstance(scopes, str):
        raise TypeError("scopes must be a list of scope names, not one string")
    body: dict[str, Any] = {"name": name, "scopes": [str(s) for s in scopes]}
    if expires_at is not None:
        body["expiresAt"] = iso(expires_at)
    if user_id is not None:
        body["userId"] = user_id
    return CreatedApiKey.from_wire((yield from api.post(API_KEYS, json=body)))


def list_api_keys(api: Api, *, user_id: str | None) -> Op[list[ApiKeyInfo]]:
    rows = as_list((yield from api.get(API_KEYS, params={"userId": user_id})), "the API key list")
    return [ApiKeyInfo.from_wire(row) for row in rows]


def get_api_key(api: Api, key_id: str) -> Op[ApiKeyInfo]:
    return ApiKeyInfo.from_wire((yield from api.get(_path(API_KEYS, key_id))))


def revoke_api_key(api: Api, key_id: str) -> Op[ApiKeyInfo]:
    return ApiKeyInfo.from_wire((yield from api.post(_path(API_KEYS, key_id, "/revoke"))))


def _lifetime(key: ApiKeyInfo) -> timedelta | None:
    if key.expires_at is None or key.created_at is None or key.expires_at <= key.created_at:
        return None
    return key.expires_at - key.created_at


def rotate_api_key(api: Api, key_id: str) -> Op[CreatedApiKey]:
    """A new key with the old one's name, scopes, owner and lifetime, then the old one revoked.

    Naming the owner matters when an admin rotates someone else's key: the
    server would otherwise make the new key the admin's. The lifetime (not
    the date, which may have passed) keeps a short-lived key from coming
    back as a permanent one. If revoking the old key fails, the new one is
    revoked again (best effort) so that no key exists whose secret nobody
    has; the error's details say which.
    """
    old = yield from get_api_key(api, key_id)
    lifetime = _lifetime(old)
    expires_at = utcnow() + lifetime if lifetime is not None else None
    created = yield from create_api_key(
        api, name=old.name, scopes=old.scopes, expires_at=expires_at, user_id=old.user_id
    )
    try:
        yield from revoke_api_key(api, key_id)
    except QboxError as error:
        error.details["newApiKeyId"] = created.key.id
        try:
            yield from revoke_api_key(api, created.key.id)
        except QboxError:
            error.details["newApiKeyRevoked"] = False
        else:
            error.details["newApiKeyRevoked"] = True
        raise
    return created


# --- users ------------------------------------------------------------------


def create_user(api: Api, *, email: str, role: str, password: str | None) -> Op[UserInfo]:
    body: dict[str, Any] = {"email": email, "role": role}
    if password is not None:
        body["password"] = password
    return UserInfo.from_wire((yield from api.post(USERS, json=body)))


def list_users(api: Api) -> Op[list[UserInfo]]:
    return [UserInfo.from_wire(row) for row in as_list((yield from api.get(USERS)), "the user list")]


def get_user(api: Api, user_id: str) -> Op[UserInfo]:
    return UserInfo.from_wire((yield from api.get(_path(USERS, user_id))))


def disable_user(api: Api, user_id: str) -> Op[UserInfo]:
    return UserInfo.from_wire((yield from api.post(_path(USERS, user_id, "/disable"))))


def set_password(api: Api, user_id: str, password: str) -> Op[None]:
    yield from api.request("PUT", _path(USERS, user_id, "/password"), json={"password": password})


# --- audit log --------------------------------------------------------------


def list_audit(
    api: Api,
    *,
    since: datetime | None,
    until: datetime | None,
    actor_id: str | None,
    action: str | None,
    target_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Op[AuditPage]:
    params = {
        "from": iso(since) if since is not None else None,
        "to": iso(until) if until is not None else None,
        "actorId": actor_id,
        "action": action,
        "targetId": target_id,
        "limit": limit,
        "cursor": cursor,
    }
    return AuditPage.from_wire((yield from api.get(AUDIT, params=params)))


def next_cursor(page: AuditPage, cursor: str | None) -> str | None:
    """The cursor of the page after ``page`` (fetched with ``cursor``); ``None`` when it was the last."""
    if page.next_cursor is not None and page.next_cursor == cursor:
        raise bad_response(f"the audit log returned its own cursor {cursor!r} as the next one")
    return page.next_cursor


def verify_audit(api: Api) -> Op[AuditVerification]:
    return AuditVerification.from_wire((yield from api.get(AUDIT + "/verify")))
