"""Exposed ports through the HTTP API (WIRE_PROTOCOL.md §4.9), on SQLite and PostgreSQL, over the
real agent with its fake runtime: every route, shape and error code, signed URLs revoked by
rotation, a spawn's ports, and another member's sandbox answering 404 everywhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qbox.core.errors import HostUnavailableError, PortCountLimitError
from qbox.server.principal import Principal
from qbox.server.services.port_specs import PortSpec
from qbox.server.services.preview import SIGNATURE_PARAM, PreviewRoute, signature_valid
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.helpers import add_user_with_key
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn
from tests.unit.server.test_template_ownership import create, ready
from tests.unit.server.test_template_pools_api import tick

PORT_KEYS = {"port", "visibility", "hostHeaderMode", "url", "allowedUsers", "signedUrl", "signedUrlExpiresAt"}


@pytest.fixture
def harness(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database, max_ports_per_sandbox=3,
                            signed_url_max_ttl_seconds=3600)


def base(sb: dict[str, Any]) -> str:
    return f"/v1/sandboxes/{sb['id']}/ports"


def expose(h: Harness, sb: dict[str, Any], body: dict[str, Any], key: str | None = None) -> Any:
    return h.client.post(base(sb), json=body, headers=h.auth(key))


def error(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def route(h: Harness, sandbox_id: str, port: int) -> PreviewRoute | None:
    services = h.client.app.state.services  # type: ignore[attr-defined]
    return h.client.portal.call(services.ports.route, sandbox_id, port)  # type: ignore[union-attr,no-any-return]


def test_expose_list_get_update_unexpose(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    r = expose(harness, sb, {"port": 8000, "visibility": "public", "force": False})
    assert r.status_code == 201, r.text
    port = r.json()
    assert port == {"port": 8000, "visibility": "public", "hostHeaderMode": "rewrite",
                    "url": f"http://8000-{sb['id']}.localhost:8080/", "allowedUsers": None,
                    "signedUrl": None, "signedUrlExpiresAt": None}
    assert c.get(f"{base(sb)}/8000", headers=auth).json() == port
    expose(harness, sb, {"port": 3000, "visibility": "private", "hostHeaderMode": "preserve"})
    listed = c.get(base(sb), headers=auth).json()
    assert list(listed) == ["ports"] and [p["port"] for p in listed["ports"]] == [3000, 8000]
    assert listed["ports"][0]["allowedUsers"] == [] and listed["ports"][0]["hostHeaderMode"] == "preserve"

    r = c.patch(f"{base(sb)}/8000", json={"visibility": "private", "allowedUsers": ["Friend@Example.com"]},
                headers=auth)
    assert r.status_code == 200 and set(r.json()) == PORT_KEYS
    assert (r.json()["visibility"], r.json()["allowedUsers"]) == ("private", ["friend@example.com"])
    # A PATCH of another field keeps the allowed users; leaving private drops them.
    assert c.patch(f"{base(sb)}/8000", json={"hostHeaderMode": "preserve"},
                   headers=auth).json()["allowedUsers"] == ["friend@example.com"]
    assert c.patch(f"{base(sb)}/8000", json={}, headers=auth).json()["hostHeaderMode"] == "preserve"
    public = c.patch(f"{base(sb)}/8000", json={"visibility": "public"}, headers=auth).json()
    assert public["allowedUsers"] is None
    found = route(harness, sb["id"], 8000)
    assert found is not None and found.allowed_users == () and found.visibility == "public"

    assert c.delete(f"{base(sb)}/8000", headers=auth).status_code == 204
    assert error(c.get(f"{base(sb)}/8000", headers=auth)) == (404, "port_not_found")
    assert error(c.delete(f"{base(sb)}/8000", headers=auth)) == (404, "port_not_found")
    assert error(c.patch(f"{base(sb)}/8000", json={}, headers=auth)) == (404, "port_not_found")
    assert route(harness, sb["id"], 8000) is None and route(harness, "sb_nosuchsandbox", 3000) is None


def test_every_refusal_has_its_code(harness: Harness) -> None:
    sb = spawn(harness)
    cases: list[tuple[dict[str, Any], tuple[int, str]]] = [
        ({"port": 0}, (400, "port_invalid")),
        ({"port": 65536}, (400, "port_invalid")),
        ({"port": -1}, (400, "port_invalid")),
        ({"port": 80}, (400, "port_reserved")),
        ({"port": 1023, "force": False}, (400, "port_reserved")),
        ({"port": 8000, "visibility": "everyone"}, (400, "validation_error")),
        ({"port": 8000, "hostHeaderMode": "keep"}, (400, "validation_error")),
        ({"port": 8000, "allowedUsers": ["usr_abcdefgh12345678"]}, (400, "validation_error")),
        ({"port": 8000, "visibility": "private", "allowedUsers": ["not a user"]}, (400, "validation_error")),
        ({"port": 8000, "visibility": "private", "allowedUsers": [f"u{i}@x.io" for i in range(65)]},
         (400, "validation_error")),
        ({"port": 8000, "visibility": "signed_url", "signedUrlTtlSeconds": 0}, (400, "signed_url_ttl_invalid")),
        ({"port": 8000, "visibility": "signed_url", "signedUrlTtlSeconds": 3601}, (400, "signed_url_ttl_invalid")),
        ({"port": 8000, "signedUrlTtlSeconds": 60}, (400, "validation_error")),
        ({"port": "8000"}, (400, "validation_error")),
        ({"port": 8000, "owner": "me"}, (400, "validation_error")),
        ({}, (400, "validation_error")),
    ]
    for body, expected in cases:
        assert error(expose(harness, sb, body)) == expected, body
    assert expose(harness, sb, {"port": 80, "force": True}).status_code == 201
    assert error(expose(harness, sb, {"port": 80, "force": True})) == (409, "port_already_exposed")
    assert expose(harness, sb, {"port": 8000}).status_code == 201
    assert expose(harness, sb, {"port": 8001}).status_code == 201
    r = expose(harness, sb, {"port": 8002})
    assert error(r) == (507, "port_count_limit") and r.json()["error"]["details"]["limit"] == 3
    c, auth = harness.client, harness.auth()
    assert error(c.get(f"{base(sb)}/0", headers=auth)) == (400, "port_invalid")
    assert error(c.get(f"{base(sb)}/http", headers=auth)) == (400, "validation_error")
    assert error(c.patch(f"{base(sb)}/8000", json={"visibility": "x"}, headers=auth)) == (400, "validation_error")
    assert error(c.patch(f"{base(sb)}/8000", json={"allowedUsers": ["a@b.c"]}, headers=auth)) \
        == (400, "validation_error")
    # A sandbox that ended takes no new ports; its old ones can still be read and removed.
    c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth)
    assert error(expose(harness, sb, {"port": 9000})) == (409, "sandbox_not_active")
    assert error(c.patch(f"{base(sb)}/8000", json={}, headers=auth)) == (409, "sandbox_not_active")
    assert c.get(base(sb), headers=auth).status_code == 200
    assert c.delete(f"{base(sb)}/8000", headers=auth).status_code == 204


def test_signed_urls_expire_and_minting_one_revokes_the_others(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    before = time.time()
    first = expose(harness, sb, {"port": 8000, "visibility": "signed_url", "signedUrlTtlSeconds": 60}).json()
    assert first["signedUrl"].startswith(first["url"] + f"?{SIGNATURE_PARAM}=")
    assert int(before) + 59 <= first["signedUrlExpiresAt"] <= int(time.time()) + 60
    old = first["signedUrl"].split("=", 1)[1]
    found = route(harness, sb["id"], 8000)
    assert found is not None and signature_valid(found.signing_key, sb["id"], 8000, old, time.time())
    # Valid only for its own sandbox and port, and only until it expires.
    assert not signature_valid(found.signing_key, sb["id"], 8001, old, time.time())
    assert not signature_valid(found.signing_key, sb["id"], 8000, old, first["signedUrlExpiresAt"])
    # GET shows the current URL, the same one.
    assert c.get(f"{base(sb)}/8000", headers=auth).json()["signedUrl"] == first["signedUrl"]

    minted = c.post(f"{base(sb)}/8000/signed-url", json={"ttlSeconds": 120}, headers=auth)
    assert minted.status_code == 200 and set(minted.json()) == PORT_KEYS
    new = minted.json()["signedUrl"].split("=", 1)[1]
    assert new != old and minted.json()["signedUrlExpiresAt"] >= int(before) + 119
    rotated = route(harness, sb["id"], 8000)
    assert rotated is not None and rotated.signing_key != found.signing_key
    assert signature_valid(rotated.signing_key, sb["id"], 8000, new, time.time())
    assert not signature_valid(rotated.signing_key, sb["id"], 8000, old, time.time())
    # {} and no body at all: the port's last lifetime again.
    again = c.post(f"{base(sb)}/8000/signed-url", json={}, headers=auth).json()
    assert again["signedUrlExpiresAt"] >= int(time.time()) + 119
    assert c.post(f"{base(sb)}/8000/signed-url", headers=auth).status_code == 200
    assert error(c.post(f"{base(sb)}/8000/signed-url", json={"ttlSeconds": 0}, headers=auth)) \
        == (400, "signed_url_ttl_invalid")
    assert error(c.post(f"{base(sb)}/8000/signed-url", json={"ttl": 5}, headers=auth)) == (400, "validation_error")

    # Leaving signed_url drops the URL and the key; coming back mints a new one.
    public = c.patch(f"{base(sb)}/8000", json={"visibility": "public"}, headers=auth).json()
    assert public["signedUrl"] is None and public["signedUrlExpiresAt"] is None
    assert error(c.post(f"{base(sb)}/8000/signed-url", json={}, headers=auth)) == (409, "conflict")
    back = c.patch(f"{base(sb)}/8000", json={"visibility": "signed_url"}, headers=auth).json()
    assert back["signedUrl"] and back["signedUrlExpiresAt"] >= int(time.time()) + 119


def test_a_signed_url_past_its_expiry_is_no_longer_shown(harness: Harness) -> None:
    sb = spawn(harness)
    expose(harness, sb, {"port": 8000, "visibility": "signed_url", "signedUrlTtlSeconds": 1})
    time.sleep(2.1)
    shown = harness.client.get(f"{base(sb)}/8000", headers=harness.auth()).json()
    assert shown["signedUrl"] is None and shown["signedUrlExpiresAt"] < time.time()


def test_a_spawns_ports_route_as_soon_as_it_runs(harness: Harness) -> None:
    # The published CLI's body (no hostHeaderMode) and the SDK's (every field).
    sb = spawn(harness, {"ports": [
        {"port": 8000, "visibility": "public", "force": False},
        {"port": 80, "visibility": "private", "hostHeaderMode": "preserve", "allowedUsers": ["a@b.io"],
         "force": True},
        {"port": 9000, "visibility": "signed_url", "hostHeaderMode": "rewrite", "signedUrlTtlSeconds": 600},
    ]})
    listed = harness.client.get(base(sb), headers=harness.auth()).json()["ports"]
    assert [(p["port"], p["visibility"], p["hostHeaderMode"]) for p in listed] == [
        (80, "private", "preserve"), (8000, "public", "rewrite"), (9000, "signed_url", "rewrite")]
    assert listed[0]["allowedUsers"] == ["a@b.io"] and listed[2]["signedUrl"]
    found = route(harness, sb["id"], 8000)
    assert found is not None and (found.sandbox_status, found.host_id) == ("running", "local")


def test_a_spawn_with_a_bad_port_is_refused_whole(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    cases: list[tuple[list[dict[str, Any]], tuple[int, str]]] = [
        ([{"port": 70000}], (400, "port_invalid")),
        ([{"port": 22}], (400, "port_reserved")),
        ([{"port": 8000}, {"port": 8000}], (409, "port_already_exposed")),
        ([{"port": p} for p in range(8000, 8004)], (507, "port_count_limit")),
        ([{"port": 8000, "visibility": "nope"}], (400, "validation_error")),
        ([{"port": 8000, "extra": 1}], (400, "validation_error")),
    ]
    for ports, expected in cases:
        r = c.post("/v1/sandboxes?wait=true&waitTimeoutSec=5", json={"templateId": "tpl_python", "ports": ports},
                   headers=auth)
        assert error(r) == expected, ports
    assert c.get("/v1/sandboxes", headers=auth).json() == []


def test_another_member_gets_404_on_every_route(harness: Harness) -> None:
    c = harness.client
    owner, owner_key = add_user_with_key(harness.settings.data_dir)
    _other, other_key = add_user_with_key(harness.settings.data_dir)
    sb = spawn(harness, key=owner_key)
    assert expose(harness, sb, {"port": 8000, "visibility": "signed_url"}, owner_key).status_code == 201
    calls = [("POST", base(sb), {"port": 8001}), ("GET", base(sb), None), ("GET", f"{base(sb)}/8000", None),
             ("PATCH", f"{base(sb)}/8000", {"visibility": "public"}), ("DELETE", f"{base(sb)}/8000", None),
             ("POST", f"{base(sb)}/8000/signed-url", {}), ("POST", f"{base(sb)}/8000/probe", None)]
    for method, url, body in calls:
        r = c.request(method, url, json=body, headers=harness.auth(other_key))
        assert error(r) == (404, "sandbox_not_found"), (method, url)
        assert owner not in r.text and "8000-" not in r.text
    # Nothing changed, and the owner (and an admin) still see it.
    assert c.get(f"{base(sb)}/8000", headers=harness.auth(owner_key)).json()["visibility"] == "signed_url"
    assert [p["port"] for p in c.get(base(sb), headers=harness.auth()).json()["ports"]] == [8000]


def test_reading_needs_read_and_changing_needs_execute(harness: Harness) -> None:
    sb = spawn(harness)
    expose(harness, sb, {"port": 8000})
    _reader, read_key = add_user_with_key(harness.settings.data_dir, role="admin", scopes=["sandboxes:read"])
    c = harness.client
    assert c.get(base(sb), headers=harness.auth(read_key)).status_code == 200
    r = expose(harness, sb, {"port": 8001}, read_key)
    assert error(r) == (403, "forbidden") and r.json()["error"]["details"]["requiredScope"] == "sandboxes:execute"
    assert error(c.delete(f"{base(sb)}/8000", headers=harness.auth(read_key))) == (403, "forbidden")


def test_private_ports_open_for_the_owner_an_admin_and_the_allowed_users(harness: Harness) -> None:
    owner, owner_key = add_user_with_key(harness.settings.data_dir)
    friend, _ = add_user_with_key(harness.settings.data_dir)
    sb = spawn(harness, key=owner_key)
    expose(harness, sb, {"port": 8000, "visibility": "private", "allowedUsers": [friend, "Pal@Example.com"]},
           owner_key)
    found = route(harness, sb["id"], 8000)
    assert found is not None and found.owner_id == owner
    services = harness.client.app.state.services  # type: ignore[attr-defined]

    def may(user_id: str, email: str, role: str = "member") -> bool:
        who = Principal(user_id=user_id, email=email, role=role, api_key_id=None, scopes=("*",))
        return harness.client.portal.call(services.ports.can_open_private, found, who)  # type: ignore[union-attr,no-any-return]

    assert may(owner, "owner@example.com") and may("usr_someadmin0000", "root@x.io", "admin")
    assert may(friend, "friend@example.com") and may("usr_pal000000000", "pal@example.com")
    assert not may("usr_stranger00000", "stranger@example.com")


def test_changes_are_audited_once_without_urls_or_keys(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    signed = expose(harness, sb, {"port": 8000, "visibility": "signed_url", "signedUrlTtlSeconds": 60}).json()
    minted = c.post(f"{base(sb)}/8000/signed-url", json={}, headers=auth).json()
    c.patch(f"{base(sb)}/8000", json={"visibility": "private", "allowedUsers": ["a@b.io"]}, headers=auth)
    c.delete(f"{base(sb)}/8000", headers=auth)
    key = route(harness, sb["id"], 8000)
    assert key is None
    log = entries(harness, targetId=sb["id"])
    actions = [e["action"] for e in log if e["action"].startswith("port.")]
    assert sorted(actions) == ["port.expose", "port.signed_url", "port.unexpose", "port.update"]
    details = " ".join(e["detail"] or "" for e in log)
    assert "port=8000 visibility=signed_url hostHeaderMode=rewrite ttlSeconds=60" in details
    for secret in (signed["signedUrl"].split("=", 1)[1], minted["signedUrl"].split("=", 1)[1], "a@b.io"):
        assert secret not in details


def test_probe_asks_the_agent_and_an_unreachable_one_is_false(harness: Harness,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    assert error(c.post(f"{base(sb)}/8000/probe", headers=auth)) == (404, "port_not_found")
    expose(harness, sb, {"port": 8000})
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    ports_client = services.ctx.agents.for_host("local").ports
    asked: list[tuple[str, int]] = []

    async def listening(sandbox_id: str, port: int) -> bool:
        asked.append((sandbox_id, port))
        return True

    monkeypatch.setattr(ports_client, "probe", listening)
    r = c.post(f"{base(sb)}/8000/probe", headers=auth)
    assert r.status_code == 200 and r.json() == {"reachable": True} and asked == [(sb["id"], 8000)]

    async def unreachable(sandbox_id: str, port: int) -> bool:
        raise HostUnavailableError("no answer")

    monkeypatch.setattr(ports_client, "probe", unreachable)
    assert c.post(f"{base(sb)}/8000/probe", headers=auth).json() == {"reachable": False}
    c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth)
    assert error(c.post(f"{base(sb)}/8000/probe", headers=auth)) == (409, "sandbox_not_active")


def test_a_sandbox_claimed_from_a_warm_pool_gets_its_ports_too(tmp_path: Path, database: str | None) -> None:
    for h in make_harness(tmp_path, database=database, warm_pool_max_size=2):
        create(h, h.admin_key, "pooled", warmPool={"size": 1})
        ready(h, h.admin_key, "tpl_pooled")
        tick(h)
        sb = spawn(h, {"templateId": "tpl_pooled", "ports": [{"port": 8000, "visibility": "private"}]})
        assert sb["fromPool"] is True
        [port] = h.client.get(base(sb), headers=h.auth()).json()["ports"]
        assert (port["port"], port["visibility"], port["allowedUsers"]) == (8000, "private", [])
        found = route(h, sb["id"], 8000)
        assert found is not None and found.sandbox_status == "running"


def test_concurrent_exposes_never_pass_the_limit(harness: Harness) -> None:
    sb = spawn(harness)
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    admin = Principal(user_id="usr_admin0000000", email="admin@localhost", role="admin", api_key_id=None,
                      scopes=("*",))

    async def all_at_once() -> list[object]:
        exposes = (services.ports.expose(admin, sb["id"], PortSpec(p)) for p in range(8000, 8006))
        return list(await asyncio.gather(*exposes, return_exceptions=True))

    outcomes = harness.client.portal.call(all_at_once)  # type: ignore[union-attr]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 3 and all(isinstance(o, PortCountLimitError) for o in refused), refused
    assert len(harness.client.get(base(sb), headers=harness.auth()).json()["ports"]) == 3
