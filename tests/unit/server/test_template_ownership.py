"""Templates have owners (issue 13, finding 1): members see and change their own, spawn their own
and the public ones; everything else is 404; deleting one never deletes anyone's history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from qbox.server.db.engine import alembic_config
from qbox.server.db.tables import Template
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_templates_api import until

SECRET = "AKIA-seca-secret-0123456789"
Body = dict[str, Any]


def create(h: Harness, key: str, name: str, **extra: Any) -> Body:
    r = h.client.post("/v1/templates", json={"name": name, "imageRef": "busybox:1", **extra},
                      headers=h.auth(key))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def ready(h: Harness, key: str, template_id: str) -> Body:
    def check() -> Body | None:
        t: Body = h.client.get(f"/v1/templates/{template_id}", headers=h.auth(key)).json()
        return t if t["status"] != "building" else None
    template: Body = until(check)
    assert template["status"] == "ready", template
    return template


def spawn(h: Harness, key: str, template_id: str) -> Body:
    r = h.client.post("/v1/sandboxes?wait=true&waitTimeoutSec=5", json={"templateId": template_id},
                      headers=h.auth(key))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def error(r: Any) -> tuple[int, str | None]:
    body = r.json() if r.content else {}
    return r.status_code, body.get("error", {}).get("code") if isinstance(body, dict) else None


@pytest.fixture
def members(harness: Harness) -> tuple[str, str, str, str]:
    """(alice's id, alice's key, bob's id, bob's key): two members."""
    alice_id, alice = add_user_with_key(harness.settings.data_dir)
    bob_id, bob = add_user_with_key(harness.settings.data_dir)
    return alice_id, alice, bob_id, bob


def test_finding_1_another_member_cannot_read_change_or_take_over_a_template(
        harness: Harness, members: tuple[str, str, str, str]) -> None:
    h = harness
    _alice_id, alice, _bob_id, bob = members
    # A creates seca-tpl with a copy step holding a secret, and an env.
    create(h, alice, "seca-tpl", steps=[{"copy": {"path": "/etc/seca.conf", "content": f"key={SECRET}\n"}}],
           env={"SECA_TOKEN": SECRET})
    ready(h, alice, "tpl_seca-tpl")
    url = "/v1/templates/tpl_seca-tpl"
    # As member B: every route answers as if the template did not exist.
    for method, path, body in [("GET", url, None), ("GET", f"{url}/build-log", None),
                               ("GET", f"{url}/build-log?follow=true", None),
                               ("POST", f"{url}/rebuild", None), ("DELETE", url, None),
                               ("PATCH", url, {"public": True})]:
        r = h.client.request(method, path, json=body, headers=h.auth(bob))
        assert error(r) == (404, "template_not_found"), (method, path, r.text)
        assert SECRET not in r.text
    listing = h.client.get("/v1/templates", headers=h.auth(bob))
    assert "seca-tpl" not in listing.text and SECRET not in listing.text
    # B cannot re-create the name with its own content: 409, and nothing said about whose it is.
    r = h.client.post("/v1/templates", json={
        "name": "seca-tpl", "imageRef": "busybox:1", "startCmd": "sh /evil.sh", "env": {"SECA_TOKEN": "bob"},
        "steps": [{"copy": {"path": "/evil.sh", "content": "echo pwned\n"}}]}, headers=h.auth(bob))
    assert error(r) == (409, "conflict")
    assert r.json()["error"]["details"] == {"name": "seca-tpl"}
    # B cannot spawn it either.
    r = h.client.post("/v1/sandboxes", json={"templateId": "tpl_seca-tpl"}, headers=h.auth(bob))
    assert error(r) == (404, "template_not_found")
    # A's next spawn runs A's template: A's env, no start command of B's.
    sb = spawn(h, alice, "tpl_seca-tpl")
    assert h.agent.params(sb["id"]).envs["SECA_TOKEN"] == SECRET
    assert h.agent.commands(sb["id"]) == []
    assert len(h.agent.builds) == 1  # B's rebuild never reached the agent
    own = h.client.get(url, headers=h.auth(alice)).json()
    assert own["steps"][0]["copy"]["content"] == f"key={SECRET}\n" and own["public"] is False


def test_finding_1_deleting_a_template_keeps_every_users_ended_sandboxes(
        harness: Harness, members: tuple[str, str, str, str]) -> None:
    h = harness
    _alice_id, alice, _bob_id, bob = members
    create(h, alice, "shared")
    ready(h, alice, "tpl_shared")
    ended = {}
    for key in (alice, h.admin_key):
        sb = spawn(h, key, "tpl_shared")
        assert h.client.delete(f"/v1/sandboxes/{sb['id']}", headers=h.auth(key)).status_code in (200, 204)
        ended[key] = sb["id"]
    assert h.client.delete("/v1/templates/tpl_shared", headers=h.auth(alice)).status_code == 204
    for key, sandbox_id in ended.items():
        r = h.client.get(f"/v1/sandboxes/{sandbox_id}", headers=h.auth(key))
        assert r.status_code == 200 and r.json()["templateId"] == "tpl_shared", r.text
        assert r.json()["status"] == "killed"
    assert [s["id"] for s in h.client.get("/v1/sandboxes", headers=h.auth(alice)).json()] == [ended[alice]]
    # The deleted template is gone for everyone, admins included, and its name is free again.
    assert error(h.client.get("/v1/templates/tpl_shared", headers=h.auth())) == (404, "template_not_found")
    assert "tpl_shared" not in h.client.get("/v1/templates", headers=h.auth()).text
    r = h.client.post("/v1/sandboxes", json={"templateId": "tpl_shared"}, headers=h.auth(alice))
    assert error(r) == (404, "template_not_found")
    again = create(h, bob, "shared")
    assert again["steps"] == [] and again["public"] is False
    assert error(h.client.get("/v1/templates/tpl_shared", headers=h.auth(alice))) == (404, "template_not_found")
    # The old sandboxes still name the template (now Bob's); their records are whole.
    assert h.client.get(f"/v1/sandboxes/{ended[alice]}", headers=h.auth(alice)).status_code == 200


def test_a_deleted_template_without_history_leaves_no_row(harness: Harness) -> None:
    create(harness, harness.admin_key, "brief")
    ready(harness, harness.admin_key, "tpl_brief")
    assert harness.client.delete("/v1/templates/tpl_brief", headers=harness.auth()).status_code == 204
    with db_session(harness.settings.data_dir) as session:
        assert session.get(Template, "tpl_brief") is None


def test_a_members_templates_are_private_and_public_ones_are_read_only_to_others(
        harness: Harness, members: tuple[str, str, str, str]) -> None:
    h = harness
    alice_id, alice, _bob_id, bob = members
    create(h, alice, "mine")
    ready(h, alice, "tpl_mine")
    # Only an admin makes a template public.
    r = h.client.post("/v1/templates", json={"name": "loud", "imageRef": "busybox:1", "public": True},
                      headers=h.auth(alice))
    assert error(r) == (403, "forbidden")
    assert error(h.client.patch("/v1/templates/tpl_mine", json={"public": True},
                                headers=h.auth(alice))) == (403, "forbidden")
    r = h.client.patch("/v1/templates/tpl_mine", json={"public": True}, headers=h.auth())
    assert r.status_code == 200 and r.json()["public"] is True and r.json()["ownerId"] == alice_id
    # Bob sees it now, unattributed, and may spawn it; changing it is still Alice's (or an admin's).
    seen = h.client.get("/v1/templates/tpl_mine", headers=h.auth(bob)).json()
    assert seen["public"] is True and seen["ownerId"] is None
    assert [t["id"] for t in h.client.get("/v1/templates", headers=h.auth(bob)).json()] == [
        "tpl_mine", "tpl_python"]
    spawn(h, bob, "tpl_mine")
    for method, path in [("POST", "/v1/templates/tpl_mine/rebuild"), ("DELETE", "/v1/templates/tpl_mine"),
                         ("PATCH", "/v1/templates/tpl_mine")]:
        r = h.client.request(method, path, json={"public": False} if method == "PATCH" else None,
                             headers=h.auth(bob))
        assert error(r) == (403, "forbidden"), (method, path)
    # The owner rebuilds; an admin sees every template with its owner.
    assert h.client.post("/v1/templates/tpl_mine/rebuild", headers=h.auth(alice)).status_code == 202
    rows = {t["id"]: t for t in h.client.get("/v1/templates", headers=h.auth()).json()}
    assert rows["tpl_mine"]["ownerId"] == alice_id and rows["tpl_python"]["ownerId"] is None
    assert rows["tpl_python"]["public"] is True and rows["tpl_python"]["builtin"] is True
    # Built-ins stay public.
    r = h.client.patch("/v1/templates/tpl_python", json={"public": False}, headers=h.auth())
    assert error(r) == (409, "conflict")
    # Made private again, it is gone for Bob.
    ready(h, alice, "tpl_mine")
    assert h.client.patch("/v1/templates/tpl_mine", json={"public": False}, headers=h.auth()).status_code == 200
    assert error(h.client.get("/v1/templates/tpl_mine", headers=h.auth(bob))) == (404, "template_not_found")


def test_an_admin_may_change_any_template(harness: Harness, members: tuple[str, str, str, str]) -> None:
    h = harness
    _alice_id, alice, _bob_id, _bob = members
    create(h, alice, "hers")
    ready(h, alice, "tpl_hers")
    assert h.client.post("/v1/templates/tpl_hers/rebuild", headers=h.auth()).status_code == 202
    ready(h, alice, "tpl_hers")
    assert h.client.get("/v1/templates/tpl_hers/build-log", headers=h.auth()).status_code == 200
    assert h.client.delete("/v1/templates/tpl_hers", headers=h.auth()).status_code == 204
    assert error(h.client.get("/v1/templates/tpl_hers", headers=h.auth(alice))) == (404, "template_not_found")


@pytest.mark.parametrize("body", [{}, {"public": "yes"}, {"public": True, "name": "x"}])
def test_a_patch_takes_only_public(harness: Harness, body: Body) -> None:
    r = harness.client.patch("/v1/templates/tpl_python", json=body, headers=harness.auth())
    assert error(r) == (400, "validation_error")


def test_migration_0005_gives_existing_templates_their_creator_or_the_first_admin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'qbox.db'}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")
            conn.execute(text(
                "INSERT INTO users (id, email, role, created_at) VALUES "
                "('usr_admin', 'a@x', 'admin', '2026-01-01'), ('usr_later', 'l@x', 'admin', '2026-02-01'), "
                "('usr_mem', 'm@x', 'member', '2026-01-02')"))
            conn.execute(text(
                "INSERT INTO templates (id, name, status, builtin, image_ref, image_digest, size_bytes, "
                "default_vcpus, default_memory_mb, enable_ssh, allow_internet_access, default_disk_mb, runtime, "
                "envs, tags, services, steps, ready_timeout_s, registry_ref, base_digest, build_generation, "
                "created_at, updated_at) VALUES "
                + ", ".join(f"('tpl_{n}', '{n}', 'ready', {b}, '', '', 0, 1, 512, 0, 1, 2048, 'crun', '{{}}', "
                            "'[]', '[]', '[]', 30, '', '', 1, '2026-01-01', '2026-01-01')"
                            for n, b in (("python", 1), ("by_member", 0), ("unknown", 0)))))
            conn.execute(text(
                "INSERT INTO audit_log (id, ts, actor_id, action, target_id, outcome, detail, prev_hash, hash) "
                "VALUES (1, '2026-01-03', 'usr_mem', 'template.create', 'tpl_by_member', 201, '', '', ''), "
                "(2, '2026-01-03', 'usr_later', 'template.create', 'tpl_unknown', 409, '', '', '')"))
            command.upgrade(config, "0005")
            rows = {r[0]: (r[1], bool(r[2])) for r in conn.execute(
                text("SELECT id, owner_id, public FROM templates"))}
    finally:
        engine.dispose()
    assert rows == {"tpl_python": (None, True), "tpl_by_member": ("usr_mem", False),
                    "tpl_unknown": ("usr_admin", False)}


def test_a_deletion_between_the_template_check_and_the_insert_leaves_no_sandbox(
        harness: Harness, members: tuple[str, str, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    _alice_id, alice, _bob_id, _bob = members
    create(h, alice, "racy")
    ready(h, alice, "tpl_racy")
    service = h.client.app.state.services.sandboxes  # type: ignore[attr-defined]
    reserve = service.placement.reserve

    async def deleted_meanwhile(*args: Any, **kwargs: Any) -> Any:
        # What a concurrent DELETE leaves once it commits: the row hidden as deleted.
        with db_session(h.settings.data_dir) as session:
            row = session.get(Template, "tpl_racy")
            assert row is not None
            row.status = "deleted"
            session.commit()
        return await reserve(*args, **kwargs)

    monkeypatch.setattr(service.placement, "reserve", deleted_meanwhile)
    r = h.client.post("/v1/sandboxes", json={"templateId": "tpl_racy"}, headers=h.auth(alice))
    assert error(r) == (404, "template_not_found")
    assert h.client.get("/v1/sandboxes", headers=h.auth(alice)).json() == []
    assert h.agent.sandbox_ids() == []
