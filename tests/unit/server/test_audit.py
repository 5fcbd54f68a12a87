"""The audit log: one entry per action kind, newest first with cursors, tamper detection."""

from __future__ import annotations

import sqlalchemy

from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_sandboxes_api import spawn
from tests.unit.server.test_users_and_sessions import PASSWORD, add_user, login

ENTRY_FIELDS = {"id", "ts", "actorId", "actorEmail", "apiKeyId", "sourceIp", "action", "targetId", "outcome",
                "detail", "hash"}


def entries(h: Harness, **params: object) -> list[dict]:  # type: ignore[type-arg]
    r = h.client.get("/v1/audit", params={"limit": 1000, **params}, headers=h.auth())
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def do_everything(h: Harness) -> dict[str, str]:
    c, auth = h.client, h.auth()
    sb = spawn(h)
    c.post(f"/v1/sandboxes/{sb['id']}/timeout", json={"timeoutSeconds": 60}, headers=auth)
    c.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "echo", "args": ["x" * 5000]}, headers=auth)
    pid = c.post(f"/v1/sandboxes/{sb['id']}/commands", json={"cmd": "true"}, headers=auth).json()["pid"]
    c.delete(f"/v1/sandboxes/{sb['id']}/commands/{pid}?signal=9", headers=auth)
    c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth)
    created = c.post("/v1/api-keys", json={"name": "k", "scopes": ["sandboxes:read"]}, headers=auth).json()
    c.post(f"/v1/api-keys/{created['key']['id']}/revoke", headers=auth)
    user = add_user(h, "audited@example.com")
    c.put(f"/v1/users/{user['id']}/password", json={"password": PASSWORD + "!"}, headers=auth)
    login(h, "audited@example.com", PASSWORD + "!")
    csrf = c.get("/auth/session").json()["csrfToken"]
    c.post("/auth/logout", headers={"X-CSRF-Token": csrf})
    login(h, "audited@example.com", "not the password")
    c.post(f"/v1/users/{user['id']}/disable", headers=auth)
    c.get("/v1/sandboxes", headers={"Authorization": "Bearer qbox_forged"})
    return {"sandbox": sb["id"], "key": created["key"]["id"], "secret": created["secret"], "user": user["id"]}


def test_one_entry_per_action_kind(harness: Harness) -> None:
    ids = do_everything(harness)
    log = entries(harness)
    assert all(set(e) == ENTRY_FIELDS for e in log)
    assert [e["id"] for e in log] == sorted((e["id"] for e in log), reverse=True)  # newest first
    by_action: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for e in log:
        by_action.setdefault(e["action"], []).append(e)
    expected = {
        "sandbox.create": (201, ids["sandbox"]), "sandbox.timeout": (200, ids["sandbox"]),
        "sandbox.exec": (200, ids["sandbox"]), "command.start": (201, ids["sandbox"]),
        "command.kill": (204, ids["sandbox"]), "sandbox.kill": (204, ids["sandbox"]),
        "api_key.create": (201, ids["key"]), "api_key.revoke": (200, ids["key"]),
        "user.create": (201, ids["user"]), "user.password": (204, ids["user"]),
        "auth.logout": (204, ids["user"]), "user.disable": (200, ids["user"]),
    }
    for action, (outcome, target) in expected.items():
        assert [(e["outcome"], e["targetId"]) for e in by_action[action]] == [(outcome, target)], action
    assert sorted(e["outcome"] for e in by_action["auth.login"]) == [200, 401]
    failed = by_action["auth.failed"]
    assert len(failed) == 1 and failed[0]["outcome"] == 401 and failed[0]["actorId"] is None
    assert failed[0]["detail"] == "GET /v1/sandboxes"
    create = by_action["sandbox.create"][0]
    assert create["actorEmail"] == "admin@localhost" and create["apiKeyId"].startswith("key_")
    assert create["sourceIp"] == "testclient"
    exec_detail = by_action["sandbox.exec"][0]["detail"]
    assert exec_detail.startswith("echo xxx") and len(exec_detail) <= 1000
    # Secrets never reach the audit log.
    everything = harness.client.get("/v1/audit?limit=1000", headers=harness.auth()).text
    assert ids["secret"] not in everything and harness.admin_key not in everything
    assert "qbox_forged" not in everything


def test_filters_and_cursor_pagination(harness: Harness) -> None:
    ids = do_everything(harness)
    only = entries(harness, targetId=ids["sandbox"])
    assert {e["targetId"] for e in only} == {ids["sandbox"]} and len(only) == 6
    assert {e["action"] for e in entries(harness, action="sandbox.kill")} == {"sandbox.kill"}
    me = harness.client.get("/v1/auth/me", headers=harness.auth()).json()
    assert {e["actorId"] for e in entries(harness, actorId=me["id"])} == {me["id"]}
    newest = entries(harness)[0]["ts"]
    assert entries(harness, **{"from": newest})[0]["ts"] == newest
    assert entries(harness, to="2000-01-01T00:00:00Z") == []
    pages, cursor = [], None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        body = harness.client.get("/v1/audit", params=params, headers=harness.auth()).json()
        pages.extend(body["data"])
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert [e["id"] for e in pages] == [e["id"] for e in entries(harness)]
    r = harness.client.get("/v1/audit?cursor=garbage", headers=harness.auth())
    assert r.status_code == 400
    r = harness.client.get("/v1/audit?from=yesterday", headers=harness.auth())
    assert r.status_code == 400


def test_members_cannot_read_the_audit_log(harness: Harness) -> None:
    _u, member = add_user_with_key(harness.settings.data_dir)
    for path in ("/v1/audit", "/v1/audit/verify"):
        r = harness.client.get(path, headers=harness.auth(member))
        assert r.status_code == 403 and r.json()["error"]["details"]["requiredScope"] == "audit:read"


def _verify(h: Harness) -> dict:  # type: ignore[type-arg]
    return h.client.get("/v1/audit/verify", headers=h.auth()).json()  # type: ignore[no-any-return]


def _sql(h: Harness, statement: str, **params: object) -> None:
    with db_session(h.settings.data_dir) as session:
        session.execute(sqlalchemy.text(statement), params)
        session.commit()


def test_verify_detects_an_edited_row(harness: Harness) -> None:
    do_everything(harness)
    clean = _verify(harness)
    assert clean["ok"] is True and clean["checked"] >= 15 and clean["firstBadId"] is None
    _sql(harness, "UPDATE audit_log SET actor_email = 'someone-else@example.com' WHERE id = 3")
    tampered = _verify(harness)
    assert tampered["ok"] is False and tampered["firstBadId"] == 3 and "modified" in tampered["reason"]


def test_verify_detects_removed_rows(harness: Harness) -> None:
    do_everything(harness)
    _sql(harness, "DELETE FROM audit_log WHERE id = 4")
    gap = _verify(harness)
    assert gap["ok"] is False and gap["firstBadId"] == 4 and "missing" in gap["reason"]


def test_verify_detects_removed_newest_rows(harness: Harness) -> None:
    do_everything(harness)
    _sql(harness, "DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)")
    assert _verify(harness)["ok"] is False


def test_verify_detects_removed_oldest_rows(harness: Harness) -> None:
    do_everything(harness)
    _sql(harness, "DELETE FROM audit_log WHERE id <= 2")
    result = _verify(harness)
    assert result["ok"] is False and "before" in result["reason"]


def test_no_api_edits_or_deletes_audit_entries(harness: Harness) -> None:
    do_everything(harness)
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        r = harness.client.request(method, "/v1/audit", headers=harness.auth())
        assert r.status_code == 405, method
        r = harness.client.request(method, "/v1/audit/1", headers=harness.auth())
        assert r.status_code in (404, 405), method


def test_retention_prunes_the_oldest_entries_and_the_chain_still_verifies(harness: Harness) -> None:
    from datetime import timedelta

    do_everything(harness)
    _sql(harness, "UPDATE audit_log SET ts = '2000-01-01 00:00:00.000000' WHERE id <= 5")
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    removed = harness.client.portal.call(services.audit.prune, timedelta(days=30))  # type: ignore[union-attr]
    assert removed == 5
    log = entries(harness)
    assert min(e["id"] for e in log) == 6
    assert log[0]["action"] == "audit.prune"
    assert _verify(harness)["ok"] is True
