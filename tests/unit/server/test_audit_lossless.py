"""The audit log never loses an entry (issue 13, finding 3).

Concurrent state changes by several users interleaved with requests whose
audit detail cannot be stored as is (a lone surrogate, a NUL): every change
has exactly one entry, written with the change, and the chain verifies; a
row removed afterwards is found missing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy

from qbox.server.services.audit import AuditNote
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn

# The raw body of the finding: json.loads turns the escape into a lone surrogate.
POISON_EXEC = b'{"cmd":"echo","args":["\\ud800"]}'
USERS, KEYS_EACH, POISONS = 4, 6, 12


def _verify(h: Harness) -> dict[str, Any]:
    r = h.client.get("/v1/audit/verify", headers=h.auth())
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _sql(h: Harness, statement: str) -> None:
    with db_session(h.settings.data_dir) as session:
        session.execute(sqlalchemy.text(statement))
        session.commit()


def _race(h: Harness, sandbox_id: str, members: list[str]) -> tuple[list[str], list[int]]:
    """Key creations by every member and poison requests, all at once through the ASGI app."""

    async def go() -> tuple[list[str], list[int]]:
        transport = httpx.ASGITransport(app=h.client.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            async def create(secret: str, n: int) -> str:
                r = await client.post("/v1/api-keys", json={"name": f"k{n}", "scopes": ["sandboxes:read"]},
                                      headers={"Authorization": f"Bearer {secret}"})
                assert r.status_code == 201, r.text
                return str(r.json()["key"]["id"])

            async def poison(n: int) -> int:
                if n % 2:
                    r = await client.post(f"/v1/sandboxes/{sandbox_id}/exec", content=POISON_EXEC,
                                          headers={**h.auth(), "Content-Type": "application/json"})
                else:
                    # An authentication failure whose detail (the path) holds a NUL.
                    r = await client.get("/v1/sandboxes/%00x", headers={"Authorization": "Bearer qbox_nope"})
                return r.status_code

            creations = [create(secret, n) for secret in members for n in range(KEYS_EACH)]
            poisons = [poison(n) for n in range(POISONS)]
            results = await asyncio.gather(*creations, *poisons)
        return [str(k) for k in results[:len(creations)]], [int(s) for s in results[len(creations):]]

    return h.client.portal.call(go)  # type: ignore[union-attr]


def test_concurrent_changes_and_poison_entries_lose_nothing(harness: Harness) -> None:
    sandbox = spawn(harness)
    members = [add_user_with_key(harness.settings.data_dir)[1] for _ in range(USERS)]
    keys, statuses = _race(harness, sandbox["id"], members)
    assert len(set(keys)) == USERS * KEYS_EACH
    log = entries(harness)
    created = [e for e in log if e["action"] == "api_key.create"]
    assert sorted(e["targetId"] for e in created) == sorted(keys)
    assert {e["outcome"] for e in created} == {201}
    assert all(e["detail"].startswith("name='k") for e in created)
    # Every poison request has its entry too, stored with the unstorable characters replaced.
    poisoned = [e for e in log if e["action"] in ("sandbox.exec", "auth.failed")]
    assert sorted(e["outcome"] for e in poisoned) == sorted(statuses)
    assert all("\ud800" not in e["detail"] and "\x00" not in e["detail"] for e in poisoned)
    assert any("\ufffd" in e["detail"] for e in poisoned)
    # Ids are gap-free, and the chain holds.
    ids = sorted(e["id"] for e in log)
    assert ids == list(range(1, len(ids) + 1))
    assert _verify(harness) == {"ok": True, "checked": len(ids), "firstBadId": None, "reason": None}
    middle = created[len(created) // 2]["id"]
    _sql(harness, f"DELETE FROM audit_log WHERE id = {middle}")
    gap = _verify(harness)
    assert gap["ok"] is False and gap["firstBadId"] == middle and "missing" in gap["reason"]


def test_a_change_commits_with_its_entry_or_not_at_all(harness: Harness) -> None:
    before = harness.client.get("/v1/api-keys", headers=harness.auth()).json()
    # The audit table is unusable: the change must fail rather than happen unaudited.
    _sql(harness, "ALTER TABLE audit_log RENAME TO audit_log_away")
    try:
        r = harness.client.post("/v1/api-keys", json={"name": "unaudited", "scopes": ["sandboxes:read"]},
                                headers=harness.auth())
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal"
    finally:
        _sql(harness, "ALTER TABLE audit_log_away RENAME TO audit_log")
    after = harness.client.get("/v1/api-keys", headers=harness.auth()).json()
    assert [k["id"] for k in after] == [k["id"] for k in before]
    assert _verify(harness)["ok"] is True


def test_the_entry_is_in_the_changes_transaction(harness: Harness) -> None:
    created = harness.client.post("/v1/api-keys", json={"name": "k", "scopes": ["sandboxes:read"]},
                                  headers=harness.auth()).json()["key"]
    # No writer to wait for: the entry exists as soon as the key does.
    with db_session(harness.settings.data_dir) as session:
        actions = session.execute(sqlalchemy.text(
            "SELECT action, outcome FROM audit_log WHERE target_id = :key"), {"key": created["id"]}).all()
    assert [tuple(a) for a in actions] == [("api_key.create", 201)]


def test_a_poison_record_is_stored_sanitised_beside_its_neighbours(harness: Harness) -> None:
    audit = harness.client.app.state.services.audit  # type: ignore[attr-defined]
    now = datetime.now(UTC)

    async def record_all() -> list[int]:
        return list(await asyncio.gather(
            audit.record(AuditNote("test.before", detail="fine", at=now), 200),
            audit.record(AuditNote("test.poison", target_id="t\ud800\x00" * 100, source_ip="\udcff" * 100,
                                   detail="a\ud800b\x00c" + "x" * 5000, at=now), 400),
            # Not even sanitising makes this one storable: it becomes a stand-in, never a loss.
            audit.record(AuditNote(None, at=now), 500),  # type: ignore[arg-type]
            audit.record(AuditNote("test.after", detail="fine", at=now), 200),
        ))

    ids = harness.client.portal.call(record_all)  # type: ignore[union-attr]
    assert len(set(ids)) == 4
    by_id = {e["id"]: e for e in entries(harness)}
    before, poison, stand_in, after = (by_id[i] for i in ids)
    assert (before["action"], after["action"]) == ("test.before", "test.after")
    assert poison["detail"].startswith("a\ufffdb\ufffdc") and len(poison["detail"]) == 1000
    assert len(poison["targetId"]) == 128 and "\ud800" not in poison["targetId"]
    assert set(poison["sourceIp"][:-1]) == {"\ufffd"} and len(poison["sourceIp"]) == 64
    assert stand_in["action"] == "audit.unrecorded" and stand_in["outcome"] == 500
    assert "could not be stored" in stand_in["detail"]
    assert _verify(harness)["ok"] is True


def test_verify_catches_a_truncated_tail_and_an_edited_entry(harness: Harness) -> None:
    for n in range(3):
        harness.client.post("/v1/api-keys", json={"name": f"k{n}", "scopes": ["sandboxes:read"]},
                            headers=harness.auth())
    last = max(e["id"] for e in entries(harness))
    _sql(harness, f"UPDATE audit_log SET detail = 'nothing to see' WHERE id = {last - 1}")
    edited = _verify(harness)
    assert edited["ok"] is False and edited["firstBadId"] == last - 1 and "modified" in edited["reason"]
    _sql(harness, f"DELETE FROM audit_log WHERE id >= {last - 1}")
    cut = _verify(harness)
    assert cut["ok"] is False and cut["firstBadId"] == last - 1 and "removed" in cut["reason"]


def test_a_reaped_sandbox_is_audited_with_its_end(harness: Harness) -> None:
    from datetime import timedelta

    from tests.unit.server.helpers import set_deadline

    sandbox = spawn(harness)
    set_deadline(harness.settings.data_dir, sandbox["id"], datetime.now(UTC) - timedelta(seconds=1))
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    assert harness.client.portal.call(services.reaper.sweep) == [sandbox["id"]]  # type: ignore[union-attr]
    assert harness.client.portal.call(services.reaper.sweep) == []  # type: ignore[union-attr]
    expired = entries(harness, action="sandbox.expire")
    assert [(e["targetId"], e["outcome"]) for e in expired] == [(sandbox["id"], 200)]
    assert _verify(harness)["ok"] is True
