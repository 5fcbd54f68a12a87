"""API keys: show-once secrets, hash-only storage, scopes never beyond the user, revocation."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import sqlalchemy

from qbox.core.timefmt import utcnow
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key, db_session

KEY_FIELDS = {"id", "name", "prefix", "scopes", "userId", "userEmail", "createdAt", "expiresAt",
              "lastUsedAt", "revokedAt", "status"}


def create(h: Harness, body: dict, key: str | None = None):  # type: ignore[no-untyped-def,type-arg]
    return h.client.post("/v1/api-keys", json=body, headers=h.auth(key))


def test_create_shows_the_secret_once_and_stores_only_its_hash(harness: Harness) -> None:
    r = create(harness, {"name": "ci", "scopes": ["sandboxes:create", "sandboxes:read"]})
    assert r.status_code == 201, r.text
    body = r.json()
    secret, key = body["secret"], body["key"]
    assert set(key) == KEY_FIELDS
    assert secret.startswith("qbox_") and len(secret) >= len("qbox_") + 43  # 32 random bytes
    assert secret.startswith(key["prefix"]) and len(key["prefix"]) < 20
    assert key["status"] == "active" and key["scopes"] == ["sandboxes:create", "sandboxes:read"]
    # Never again: not in the listing, not in one key's view.
    listing = harness.client.get("/v1/api-keys", headers=harness.auth()).text
    single = harness.client.get(f"/v1/api-keys/{key['id']}", headers=harness.auth()).text
    assert secret not in listing and secret not in single
    # Only the hash is in the database.
    with db_session(harness.settings.data_dir) as session:
        stored = session.execute(
            sqlalchemy.text("SELECT secret_hash, prefix FROM api_keys WHERE id = :id"),
            {"id": key["id"]}).one()
    assert stored[0] == hashlib.sha256(secret.encode()).hexdigest()
    db_bytes = b"".join(p.read_bytes() for p in harness.settings.data_dir.glob("qbox.db*"))
    assert secret.encode() not in db_bytes
    # And the new key works, with exactly its scopes.
    me = harness.client.get("/v1/auth/me", headers=harness.auth(secret)).json()
    assert me["apiKeyId"] == key["id"] and me["scopes"] == key["scopes"]


def test_revoked_key_fails_on_the_very_next_request(harness: Harness) -> None:
    body = create(harness, {"name": "temp", "scopes": ["sandboxes:read"]}).json()
    assert harness.client.get("/v1/sandboxes", headers=harness.auth(body["secret"])).status_code == 200
    r = harness.client.post(f"/v1/api-keys/{body['key']['id']}/revoke", headers=harness.auth())
    assert r.status_code == 200 and r.json()["status"] == "revoked" and r.json()["revokedAt"]
    r = harness.client.get("/v1/sandboxes", headers=harness.auth(body["secret"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    # Revoking again is fine.
    assert harness.client.post(f"/v1/api-keys/{body['key']['id']}/revoke", headers=harness.auth()).status_code == 200


def test_expired_keys_fail_like_revoked_ones(harness: Harness) -> None:
    soon = (utcnow() + timedelta(seconds=1)).isoformat()  # Python isoformat, with +00:00, as clients send
    body = create(harness, {"name": "short", "scopes": ["sandboxes:read"], "expiresAt": soon}).json()
    assert body["key"]["expiresAt"].endswith("Z")
    with db_session(harness.settings.data_dir) as session:
        session.execute(sqlalchemy.text(
            "UPDATE api_keys SET expires_at = :t WHERE id = :id"),
            {"t": (utcnow() - timedelta(seconds=1)).replace(tzinfo=None), "id": body["key"]["id"]})
        session.commit()
    assert harness.client.get("/v1/sandboxes", headers=harness.auth(body["secret"])).status_code == 401
    listed = {k["id"]: k for k in harness.client.get("/v1/api-keys", headers=harness.auth()).json()}
    assert listed[body["key"]["id"]]["status"] == "expired"
    past = (utcnow() - timedelta(days=1)).isoformat()
    assert create(harness, {"name": "x", "scopes": ["sandboxes:read"], "expiresAt": past}).status_code == 400


def test_scopes_never_exceed_the_user_or_the_creating_key(harness: Harness) -> None:
    data_dir = harness.settings.data_dir
    _member, member_key = add_user_with_key(data_dir, scopes=["*"])
    r = create(harness, {"name": "x", "scopes": ["audit:read"]}, member_key)
    assert r.status_code == 403 and r.json()["error"]["details"]["requiredScope"] == "audit:read"
    # A member's "*" means what a member may do: no hosts, no audit.
    me = harness.client.get("/v1/auth/me", headers=harness.auth(member_key)).json()
    assert me["scopes"] == ["*"]
    assert harness.client.get("/v1/audit", headers=harness.auth(member_key)).status_code == 403
    _u, narrow = add_user_with_key(data_dir, role="admin", scopes=["api-keys:write", "sandboxes:read"])
    r = create(harness, {"name": "y", "scopes": ["sandboxes:create"]}, narrow)
    assert r.status_code == 403
    assert create(harness, {"name": "y", "scopes": ["sandboxes:read"]}, narrow).status_code == 201
    r = create(harness, {"name": "z", "scopes": ["sandboxes:fly"]})
    assert r.status_code == 400 and "scopes" in r.json()["error"]["details"]["fieldErrors"]
    assert create(harness, {"name": "z", "scopes": []}).status_code == 400


def test_members_list_their_own_keys_admins_everyones(harness: Harness) -> None:
    data_dir = harness.settings.data_dir
    alice_id, alice = add_user_with_key(data_dir)
    bob_id, bob = add_user_with_key(data_dir)
    alices = harness.client.get("/v1/api-keys", headers=harness.auth(alice)).json()
    assert {k["userId"] for k in alices} == {alice_id}
    everyone = harness.client.get("/v1/api-keys", headers=harness.auth()).json()
    assert {alice_id, bob_id} <= {k["userId"] for k in everyone}
    bobs_key = next(k["id"] for k in everyone if k["userId"] == bob_id)
    for method, path in (("GET", f"/v1/api-keys/{bobs_key}"), ("POST", f"/v1/api-keys/{bobs_key}/revoke")):
        r = harness.client.request(method, path, headers=harness.auth(alice))
        assert r.status_code == 404, (method, path)
    assert harness.client.get("/v1/sandboxes", headers=harness.auth(bob)).status_code == 200
