"""ApiKeys, Users and Audit (sync and async) against a scripted API: request shapes and multi-step flows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from qbox import (
    ApiKeys,
    AsyncApiKeys,
    AsyncAudit,
    AsyncUsers,
    Audit,
    ConnectionFailedError,
    CreatedApiKey,
    NotFoundError,
    QboxError,
    Users,
)
from tests.unit.sdk.fakes import FakeServer, error, reply

KEYS = "/v1/api-keys"
USERS = "/v1/users"
AUDIT = "/v1/audit"


def api_key(kid: str = "ak_1", **extra: Any) -> dict[str, Any]:
    return {
        "id": kid, "name": "ci", "prefix": "qbox_ab12", "scopes": ["sandboxes:read", "sandboxes:create"],
        "userId": "usr_1", "userEmail": "ada@example.com", "createdAt": "2026-01-02T03:04:05.000000Z",
        "expiresAt": None, "lastUsedAt": None, "revokedAt": None, "status": "active", **extra,
    }  # fmt: skip


def user(uid: str = "usr_2", **extra: Any) -> dict[str, Any]:
    return {
        "id": uid, "email": "bob@example.com", "role": "member", "createdAt": "2026-01-02T03:04:05.000000Z",
        "disabledAt": None, "status": "active", "hasPassword": False, **extra,
    }  # fmt: skip


def entry(eid: int, ts: str = "2026-01-02T03:04:05.000000Z", **extra: Any) -> dict[str, Any]:
    return {
        "id": eid, "ts": ts, "actorId": "usr_1", "actorEmail": "ada@example.com", "apiKeyId": "ak_1",
        "sourceIp": "10.0.0.1", "action": "sandbox.create", "targetId": f"sb_{eid}", "outcome": 201,
        "detail": "", "hash": f"h{eid}", **extra,
    }  # fmt: skip


# --- API keys ---------------------------------------------------------------


def test_create_sends_name_scopes_and_an_offset_expiry(server: FakeServer) -> None:
    server.on("POST", KEYS, reply(201, {"key": api_key("ak_9"), "secret": "qbox_secret"}))
    expires = datetime(2026, 12, 27, 13, 38, 53, 190338, tzinfo=timezone(timedelta(hours=2)))
    created = ApiKeys.create("ci", ["sandboxes:read", "sandboxes:create"], expires, config=server.config())
    assert server.last("POST", KEYS).body == {
        "name": "ci",
        "scopes": ["sandboxes:read", "sandboxes:create"],
        "expiresAt": "2026-12-27T11:38:53.190338+00:00",
    }
    assert (created.key.id, created.secret) == ("ak_9", "qbox_secret")
    assert created.key.scopes == ("sandboxes:read", "sandboxes:create") and created.key.is_active
    assert created.key.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert "qbox_secret" not in repr(created)


def test_create_without_expiry_and_scopes_must_be_a_list(server: FakeServer) -> None:
    server.on("POST", KEYS, reply(201, {"key": api_key(), "secret": "qbox_s"}))
    ApiKeys.create("ci", ("sandboxes:read",), config=server.config())
    assert server.last("POST", KEYS).body == {"name": "ci", "scopes": ["sandboxes:read"]}
    ApiKeys.create("ci", ["sandboxes:read"], user_id="usr_2", config=server.config())
    assert server.last("POST", KEYS).body == {"name": "ci", "scopes": ["sandboxes:read"], "userId": "usr_2"}
    with pytest.raises(TypeError):
        ApiKeys.create("ci", "sandboxes:read", config=server.config())
    assert len(server.seen) == 2


def test_create_needs_the_secret_in_the_answer(server: FakeServer) -> None:
    server.on("POST", KEYS, reply(201, {"key": api_key()}))
    with pytest.raises(QboxError) as caught:
        ApiKeys.create("ci", ["x"], config=server.config())
    assert caught.value.code == "bad_response"


def test_list_get_and_revoke(server: FakeServer) -> None:
    server.on("GET", KEYS, reply(200, [api_key("ak_1"), api_key("ak_2", status="revoked")]))
    server.on("GET", KEYS + "/ak_1", reply(200, api_key("ak_1", lastUsedAt="2026-01-03T00:00:00.000000Z")))
    server.on("POST", KEYS + "/ak_1/revoke", reply(200, api_key("ak_1", status="revoked")))
    config = server.config()
    assert [k.id for k in ApiKeys.list(config=config)] == ["ak_1", "ak_2"]
    assert server.last("GET", KEYS).params == {}
    ApiKeys.list("usr_2", config=config)
    assert server.last("GET", KEYS).params == {"userId": "usr_2"}
    assert ApiKeys.get("ak_1", config=config).last_used_at == datetime(2026, 1, 3, tzinfo=UTC)
    revoked = ApiKeys.revoke("ak_1", config=config)
    assert revoked.status == "revoked" and not revoked.is_active
    assert server.last("POST", KEYS + "/ak_1/revoke").body is None


def test_path_ids_are_escaped(server: FakeServer) -> None:
    raw_paths: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        raw_paths.append(request.url.raw_path)
        return reply(200, api_key())

    server.on("GET", KEYS + "/../users", answer)
    ApiKeys.get("../users", config=server.config())
    assert raw_paths == [b"/v1/api-keys/..%2Fusers"]


def test_rotate_creates_with_the_same_name_scopes_and_owner_then_revokes(server: FakeServer) -> None:
    old = api_key("ak_old", name="deploy", scopes=["templates:read"], userId="usr_2")
    server.on("GET", KEYS + "/ak_old", reply(200, old))
    server.on("POST", KEYS, reply(201, {"key": api_key("ak_new", name="deploy"), "secret": "qbox_new"}))
    server.on("POST", KEYS + "/ak_old/revoke", reply(200, {**old, "status": "revoked"}))
    created = ApiKeys.rotate("ak_old", config=server.config())
    assert (created.key.id, created.secret) == ("ak_new", "qbox_new")
    assert server.targets == ["GET /v1/api-keys/ak_old", "POST /v1/api-keys", "POST /v1/api-keys/ak_old/revoke"]
    # The owner is named so that an admin rotating someone else's key does not end up owning the new one.
    assert server.last("POST", KEYS).body == {"name": "deploy", "scopes": ["templates:read"], "userId": "usr_2"}


def test_rotate_keeps_the_keys_lifetime_not_its_date(server: FakeServer) -> None:
    # Created 2026-01-02 for 30 days, long expired: the new key gets 30 days from now, not a date in the past.
    old = api_key("ak_old", createdAt="2026-01-02T00:00:00Z", expiresAt="2026-02-01T00:00:00Z", status="expired")
    server.on("GET", KEYS + "/ak_old", reply(200, old))
    server.on("POST", KEYS, reply(201, {"key": api_key("ak_new"), "secret": "qbox_new"}))
    server.on("POST", KEYS + "/ak_old/revoke", reply(200, old))
    ApiKeys.rotate("ak_old", config=server.config())
    expires = datetime.fromisoformat(server.last("POST", KEYS).body["expiresAt"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)


def test_rotate_of_a_missing_key_changes_nothing(server: FakeServer) -> None:
    server.on("GET", KEYS + "/ak_x", error(404, "not_found", "api key ak_x not found"))
    with pytest.raises(NotFoundError):
        ApiKeys.rotate("ak_x", config=server.config())
    assert server.targets == ["GET /v1/api-keys/ak_x"]


def test_rotate_takes_the_new_key_back_when_the_old_one_cannot_be_revoked(server: FakeServer) -> None:
    server.on("GET", KEYS + "/ak_old", reply(200, api_key("ak_old")))
    server.on("POST", KEYS, reply(201, {"key": api_key("ak_new"), "secret": "qbox_new"}))
    server.on("POST", KEYS + "/ak_old/revoke", error(404, "not_found", "gone"))
    server.on("POST", KEYS + "/ak_new/revoke", reply(200, api_key("ak_new", status="revoked")))
    with pytest.raises(NotFoundError) as caught:
        ApiKeys.rotate("ak_old", config=server.config())
    assert caught.value.details == {"newApiKeyId": "ak_new", "newApiKeyRevoked": True}
    assert server.targets[-2:] == ["POST /v1/api-keys/ak_old/revoke", "POST /v1/api-keys/ak_new/revoke"]


def test_rotate_says_when_the_new_key_could_not_be_taken_back_either(server: FakeServer) -> None:
    server.on("GET", KEYS + "/ak_old", reply(200, api_key("ak_old")))
    server.on("POST", KEYS, reply(201, {"key": api_key("ak_new"), "secret": "qbox_new"}))
    server.on("POST", KEYS + "/ak_old/revoke", httpx.ReadError("reset"))
    server.on("POST", KEYS + "/ak_new/revoke", httpx.ReadError("reset"))
    with pytest.raises(ConnectionFailedError) as caught:
        ApiKeys.rotate("ak_old", config=server.config())
    assert caught.value.details["newApiKeyId"] == "ak_new"
    assert caught.value.details["newApiKeyRevoked"] is False


async def test_async_api_keys(server: FakeServer) -> None:
    server.on("POST", KEYS, reply(201, {"key": api_key("ak_new"), "secret": "qbox_new"}))
    server.on("GET", KEYS, reply(200, [api_key()]))
    server.on("GET", KEYS + "/ak_1", reply(200, api_key()))
    server.on("POST", KEYS + "/ak_1/revoke", reply(200, api_key(status="revoked")))
    config = server.config()
    assert isinstance(await AsyncApiKeys.create("ci", ["x"], config=config), CreatedApiKey)
    assert len(await AsyncApiKeys.list(config=config)) == 1
    assert (await AsyncApiKeys.get("ak_1", config=config)).name == "ci"
    assert (await AsyncApiKeys.revoke("ak_1", config=config)).status == "revoked"
    assert (await AsyncApiKeys.rotate("ak_1", config=config)).key.id == "ak_new"
    assert server.targets[-3:] == ["GET /v1/api-keys/ak_1", "POST /v1/api-keys", "POST /v1/api-keys/ak_1/revoke"]


# --- users ------------------------------------------------------------------


def test_users_request_shapes(server: FakeServer) -> None:
    server.on("POST", USERS, reply(201, user()))
    server.on("GET", USERS, reply(200, [user(), user("usr_3", role="admin")]))
    server.on("GET", USERS + "/usr_2", reply(200, user()))
    server.on("POST", USERS + "/usr_2/disable", reply(200, user(status="disabled", disabledAt="2026-02-01T00:00:00Z")))
    server.on("PUT", USERS + "/usr_2/password", reply(204))
    config = server.config()
    created = Users.create("bob@example.com", config=config)
    assert server.last("POST", USERS).body == {"email": "bob@example.com", "role": "member"}
    assert created.email == "bob@example.com" and not created.is_admin and created.is_active
    Users.create("eve@example.com", "admin", "pw", config=config)
    assert server.last("POST", USERS).body == {"email": "eve@example.com", "role": "admin", "password": "pw"}
    assert [u.is_admin for u in Users.list(config=config)] == [False, True]
    assert Users.get("usr_2", config=config).id == "usr_2"
    disabled = Users.disable("usr_2", config=config)
    assert not disabled.is_active and disabled.disabled_at == datetime(2026, 2, 1, tzinfo=UTC)
    assert server.last("POST", USERS + "/usr_2/disable").body is None
    assert Users.set_password("usr_2", "s3cret", config=config) is None
    assert server.last("PUT", USERS + "/usr_2/password").body == {"password": "s3cret"}


async def test_async_users(server: FakeServer) -> None:
    server.on("POST", USERS, reply(201, user()))
    server.on("GET", USERS, reply(200, [user()]))
    server.on("GET", USERS + "/usr_2", reply(200, user()))
    server.on("POST", USERS + "/usr_2/disable", reply(200, user(status="disabled")))
    server.on("PUT", USERS + "/usr_2/password", reply(204))
    config = server.config()
    assert (await AsyncUsers.create("bob@example.com", config=config)).id == "usr_2"
    assert len(await AsyncUsers.list(config=config)) == 1
    assert (await AsyncUsers.get("usr_2", config=config)).email == "bob@example.com"
    assert (await AsyncUsers.disable("usr_2", config=config)).status == "disabled"
    await AsyncUsers.set_password("usr_2", "pw", config=config)
    assert server.last("PUT", USERS + "/usr_2/password").body == {"password": "pw"}


# --- audit ------------------------------------------------------------------


def test_audit_list_sends_every_filter(server: FakeServer) -> None:
    server.on("GET", AUDIT, reply(200, {"data": [entry(2), entry(1)], "nextCursor": "c1"}))
    page = Audit.list(
        since=datetime(2026, 1, 1, tzinfo=UTC),
        until=datetime(2026, 1, 2),  # naive means UTC
        actor_id="usr_1",
        action="sandbox.create",
        target_id="sb_1",
        limit=2,
        cursor="c0",
        config=server.config(),
    )
    assert server.last("GET", AUDIT).params == {
        "from": "2026-01-01T00:00:00.000000+00:00",
        "to": "2026-01-02T00:00:00.000000+00:00",
        "actorId": "usr_1",
        "action": "sandbox.create",
        "targetId": "sb_1",
        "limit": "2",
        "cursor": "c0",
    }
    assert [e.id for e in page.entries] == [2, 1] and page.next_cursor == "c1"
    first = page.entries[0]
    assert (first.actor, first.outcome, first.source_ip, first.hash) == ("ada@example.com", 201, "10.0.0.1", "h2")
    Audit.list(config=server.config())
    assert server.last("GET", AUDIT).params == {"limit": "100"}


def test_audit_entry_actor_falls_back_to_the_id_and_bare_arrays_are_one_page(server: FakeServer) -> None:
    server.on("GET", AUDIT, reply(200, [entry(1, actorEmail=None, actorId="usr_9")]))
    page = Audit.list(config=server.config())
    assert page.entries[0].actor == "usr_9" and page.next_cursor is None


def _paged(server: FakeServer) -> None:
    pages = {
        None: {"data": [entry(5), entry(4)], "nextCursor": "c4"},
        "c4": {"data": [entry(3), entry(2)], "nextCursor": "c2"},
        "c2": {"data": [entry(1)], "nextCursor": None},
    }
    server.on("GET", AUDIT, lambda request: reply(200, pages[request.url.params.get("cursor")]))


def test_audit_iter_follows_cursors_lazily(server: FakeServer) -> None:
    _paged(server)
    entries = Audit.iter(action="sandbox.create", page_size=2, config=server.config())
    assert [next(entries).id for _ in range(2)] == [5, 4]
    assert len(server.seen) == 1  # the second page is not fetched before it is needed
    assert [e.id for e in entries] == [3, 2, 1]
    assert [s.params.get("cursor") for s in server.seen] == [None, "c4", "c2"]
    assert all(s.params["action"] == "sandbox.create" and s.params["limit"] == "2" for s in server.seen)


async def test_async_audit_iter_follows_cursors(server: FakeServer) -> None:
    _paged(server)
    assert [e.id async for e in AsyncAudit.iter(page_size=2, config=server.config())] == [5, 4, 3, 2, 1]
    assert (await AsyncAudit.list(cursor="c2", config=server.config())).entries[0].id == 1


def test_audit_iter_stops_on_a_cursor_that_does_not_move(server: FakeServer) -> None:
    server.on("GET", AUDIT, reply(200, {"data": [entry(1)], "nextCursor": "same"}))
    with pytest.raises(QboxError) as caught:
        list(Audit.iter(cursor="same", config=server.config()))
    assert caught.value.code == "bad_response"


def test_audit_verify(server: FakeServer) -> None:
    server.on(
        "GET",
        AUDIT + "/verify",
        reply(200, {"ok": True, "checked": 12, "firstBadId": None, "reason": None}),
        reply(200, {"ok": False, "checked": 7, "firstBadId": 7, "reason": "hash mismatch"}),
        reply(200, {"checked": 1}),
    )
    assert Audit.verify(config=server.config()).ok
    broken = Audit.verify(config=server.config())
    assert (broken.ok, broken.checked, broken.first_bad_id, broken.reason) == (False, 7, 7, "hash mismatch")
    with pytest.raises(QboxError):
        Audit.verify(config=server.config())


async def test_async_audit_verify(server: FakeServer) -> None:
    server.on("GET", AUDIT + "/verify", reply(200, {"ok": True, "checked": 0, "firstBadId": None, "reason": None}))
    assert (await AsyncAudit.verify(config=server.config())).checked == 0
