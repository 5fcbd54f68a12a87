"""The Hosts page (admins only: bars, live rows, drain/uncordon) and the API Keys page
(list, create with the secret shown once, revoke), each checked against what the API says."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy import update

from qbox.core.timefmt import utcnow
from qbox.server.db.tables import ApiKey
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import db_session
from tests.unit.web.helpers import ORIGIN, WebClient, text_of


def local_host(h: Harness) -> str:
    hosts = h.client.get("/v1/hosts", headers=h.auth()).json()
    assert len(hosts) == 1, hosts
    return str(hosts[0]["id"])


def host_status(h: Harness, host_id: str) -> str:
    return str(h.client.get(f"/v1/hosts/{host_id}", headers=h.auth()).json()["status"])


# --- hosts ---------------------------------------------------------------------------


def test_a_member_is_refused_the_hosts_page_and_its_changes(harness: Harness, web_member: WebClient) -> None:
    host_id = local_host(harness)
    api = web_member.api("GET", "/v1/hosts")
    for r in (web_member.get("/hosts"), web_member.get("/hosts/rows")):
        assert r.status_code == api.status_code == 403
        assert r.headers["content-type"].startswith("text/html")
        assert "Not allowed" in text_of(r.text) and host_id not in r.text
    r = web_member.get("/hosts/rows", htmx=True)
    assert r.status_code == 403 and r.headers["hx-retarget"] == "#alerts" and host_id not in r.text
    for action in ("drain", "uncordon"):
        r = web_member.post(f"/hosts/{host_id}/{action}")
        assert r.status_code == web_member.api("POST", f"/v1/hosts/{host_id}/{action}").status_code == 403
    assert host_status(harness, host_id) == "ready"


def test_the_admin_sees_each_host_with_its_bars(harness: Harness, web_admin: WebClient) -> None:
    host = harness.client.get("/v1/hosts", headers=harness.auth()).json()[0]
    r = web_admin.get("/hosts")
    assert r.status_code == 200
    row = re.search(rf'<tr id="host-{host["id"]}">.*?</tr>', r.text, re.S)
    assert row is not None
    cells = row.group(0)
    for label in ("CPU", "Memory", "Disk", "Sandboxes"):
        bar = re.search(rf'<div class="bar[^"]*" role="progressbar" aria-valuenow="(\d+)"\s+aria-valuemin="0" '
                        rf'aria-valuemax="100" aria-label="{label}"', cells)
        assert bar is not None and 0 <= int(bar.group(1)) <= 100, label
    text = text_of(cells)
    assert f"{host['sandboxCount']} of {host['maxSandboxes']}" in text
    assert "ready" in text and host["version"] in text and "Drain" in text
    assert f'datetime="{host["lastHeartbeatAt"]}" data-age' in cells
    # The table's body asks for itself again: the same rows, as a fragment.
    assert 'hx-get="/hosts/rows" hx-trigger="every 3s"' in r.text
    rows = web_admin.get("/hosts/rows", htmx=True)
    assert rows.status_code == 200 and rows.text.lstrip().startswith('<tbody id="host-rows"')
    assert f'id="host-{host["id"]}"' in rows.text and "<html" not in rows.text


def test_the_admin_drains_and_uncordons_a_host(harness: Harness, web_admin: WebClient) -> None:
    host_id = local_host(harness)
    try:
        r = web_admin.post(f"/hosts/{host_id}/drain")
        assert r.status_code == 200 and host_status(harness, host_id) == "draining"
        assert "Uncordon" in text_of(r.text) and r.text.lstrip().startswith('<tbody id="host-rows"')
        r = web_admin.post(f"/hosts/{host_id}/uncordon", htmx=False,
                           data={"csrf_token": web_admin.csrf}, headers={"X-CSRF-Token": ""})
        assert (r.status_code, r.headers["location"]) == (303, "/hosts")
        assert host_status(harness, host_id) == "ready"
        audit = harness.client.get("/v1/audit", headers=harness.auth()).json()
        actions = [(e["action"], e.get("targetId")) for e in audit["data"]]
        assert ("host.drain", host_id) in actions and ("host.uncordon", host_id) in actions
    finally:
        harness.client.post(f"/v1/hosts/{host_id}/uncordon", headers=harness.auth())


def test_draining_needs_our_origin_and_the_token(harness: Harness, web_admin: WebClient) -> None:
    host_id = local_host(harness)
    refused = [
        web_admin.post(f"/hosts/{host_id}/drain", headers={"X-CSRF-Token": ""}),
        web_admin.post(f"/hosts/{host_id}/drain", headers={"Origin": "https://evil.example"}),
        web_admin.client.post(f"/hosts/{host_id}/drain", data={"csrf_token": web_admin.csrf}),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert host_status(harness, host_id) == "ready"


def test_an_unknown_host_is_the_apis_404(harness: Harness, web_admin: WebClient) -> None:
    for host_id in ("host_doesnotexist", "-dash-first", "x" * 70):
        api = harness.client.post(f"/v1/hosts/{host_id}/drain", headers=harness.auth())
        r = web_admin.post(f"/hosts/{host_id}/drain", htmx=False)
        assert r.status_code == api.status_code == 404, host_id
        assert "Not found" in text_of(r.text)


# --- API keys ----------------------------------------------------------------------------


def create(client: WebClient, **fields: object) -> httpx.Response:
    return client.post("/keys", htmx=False, data={"csrf_token": client.csrf, **fields},
                       headers={"X-CSRF-Token": ""})


def secret_in(html: str) -> str:
    found = re.search(r'<input id="new-key-secret"[^>]*value="(qbox_[^"]+)"[^>]*readonly', html)
    assert found is not None, html
    return found.group(1)


def test_a_new_keys_secret_is_shown_once(harness: Harness, web_member: WebClient) -> None:
    r = create(web_member, name="laptop", scopes=["sandboxes:read", "templates:read"], expires_days="30")
    assert r.status_code == 201
    secret = secret_in(r.text)
    assert 'data-copy="new-key-secret"' in r.text
    assert "it will not be shown again" in text_of(r.text)
    listed = web_member.api("GET", "/v1/api-keys").json()
    key = next(k for k in listed if k["name"] == "laptop")
    assert key["scopes"] == ["sandboxes:read", "templates:read"] and key["expiresAt"] is not None
    with_key = {"Authorization": f"Bearer {secret}"}
    assert harness.client.get("/v1/sandboxes", headers=with_key).status_code == 200
    assert harness.client.get("/v1/templates", headers=with_key).status_code == 200
    assert harness.client.post("/v1/sandboxes", headers=with_key, json={"templateId": "python"}).status_code == 403
    page = web_member.get("/keys")
    assert page.status_code == 200 and secret not in page.text
    assert key["prefix"] in page.text and "laptop" in text_of(page.text)
    audit = harness.client.get("/v1/audit", headers=harness.auth(), params={"action": "api_key.create"}).json()
    assert any(e["actorId"] == web_member.user_id for e in audit["data"])


def test_a_key_that_does_not_validate_shows_the_form_again(web_member: WebClient) -> None:
    before = len(web_member.api("GET", "/v1/api-keys").json())
    cases: list[tuple[dict[str, object], str]] = [
        ({"name": "", "scopes": ["sandboxes:read"]}, "name"),
        ({"name": "no scopes"}, "scopes"),
        ({"name": "bad expiry", "scopes": ["sandboxes:read"], "expires_days": "0"}, "expiry"),
        ({"name": "words", "scopes": ["sandboxes:read"], "expires_days": "soon"}, "expiry"),
        ({"name": "made up", "scopes": ["sandboxes:fly"]}, "scopes")]
    for fields, problem in cases:
        r = create(web_member, **fields)
        assert r.status_code == 400, fields
        assert "The key was not created" in text_of(r.text) and 'id="new-key-secret"' not in r.text
        assert f'id="key-{problem}-error"' in r.text, (fields, problem)
        assert f'value="{fields["name"]}"' in r.text  # what was typed stays
    # A member cannot give a key the scopes of an admin.
    r = create(web_member, name="too much", scopes=["hosts:read"])
    assert r.status_code == 403 and 'id="new-key-secret"' not in r.text
    assert len(web_member.api("GET", "/v1/api-keys").json()) == before


def test_the_list_is_what_the_api_shows_the_viewer(web_admin: WebClient, web_member: WebClient) -> None:
    mine = text_of(web_member.get("/keys").text)
    theirs = web_admin.api("GET", "/v1/api-keys").json()
    alice = [k for k in theirs if k["userId"] == web_member.user_id]
    others = [k for k in theirs if k["userId"] != web_member.user_id]
    assert alice and others
    assert all(k["prefix"] in mine for k in alice)
    assert not any(k["prefix"] in mine for k in others)
    everyone = text_of(web_admin.get("/keys").text)
    assert all(k["prefix"] in everyone for k in theirs)
    assert "alice@example.com" in everyone  # the admin sees whose key each is


def test_revoking_a_key(harness: Harness, web_member: WebClient, stranger: WebClient) -> None:
    secret = secret_in(create(web_member, name="to revoke", scopes=["sandboxes:read"]).text)
    key = next(k for k in web_member.api("GET", "/v1/api-keys").json() if k["name"] == "to revoke")
    with_key = {"Authorization": f"Bearer {secret}"}
    # Another member: the API's 404, and the key still works.
    api = stranger.api("POST", f"/v1/api-keys/{key['id']}/revoke")
    r = stranger.post(f"/keys/{key['id']}/revoke")
    assert r.status_code == api.status_code == 404 and r.headers["hx-retarget"] == "#alerts"
    assert stranger.post(f"/keys/{key['id']}/revoke", htmx=False).status_code == 404
    # No token, or another site: refused, nothing revoked.
    assert web_member.post(f"/keys/{key['id']}/revoke", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert web_member.post(f"/keys/{key['id']}/revoke", headers={"Origin": "https://evil.example"}).status_code == 403
    assert harness.client.get("/v1/sandboxes", headers=with_key).status_code == 200
    # The owner: the row comes back revoked, and the key is refused from then on.
    r = web_member.post(f"/keys/{key['id']}/revoke")
    assert r.status_code == 200 and r.text.lstrip().startswith(f'<tr id="key-{key["id"]}">')
    assert "revoked" in text_of(r.text) and "Revoke" not in text_of(r.text)
    assert harness.client.get("/v1/sandboxes", headers=with_key).status_code == 401
    assert re.search(rf'id="key-{key["id"]}">.*?status-revoked', web_member.get("/keys").text, re.S)


def test_cross_site_key_creation_is_refused(web_member: WebClient) -> None:
    before = len(web_member.api("GET", "/v1/api-keys").json())
    fields = {"name": "evil", "scopes": "sandboxes:read"}
    refused = [
        web_member.client.post("/keys", data={**fields, "csrf_token": web_member.csrf},
                               headers={"Origin": "https://evil.example"}),
        web_member.client.post("/keys", data=fields, headers={"Origin": ORIGIN}),
        web_member.client.post("/keys", data={**fields, "csrf_token": web_member.csrf}),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert all("cross-site request refused" in text_of(r.text) for r in refused)
    assert len(web_member.api("GET", "/v1/api-keys").json()) == before


def test_expired_and_revoked_keys_say_so(harness: Harness, web_member: WebClient) -> None:
    for name in ("old", "gone"):
        assert create(web_member, name=name, scopes=["sandboxes:read"], expires_days="1").status_code == 201
    keys = {k["name"]: k for k in web_member.api("GET", "/v1/api-keys").json()}
    with db_session(harness.settings.data_dir) as session:
        session.execute(update(ApiKey).where(ApiKey.id == keys["old"]["id"])
                        .values(expires_at=utcnow() - timedelta(minutes=1)))
        session.commit()
    web_member.post(f"/keys/{keys['gone']['id']}/revoke")
    page = web_member.get("/keys").text
    statuses = {k["name"]: k["status"] for k in web_member.api("GET", "/v1/api-keys").json()}
    assert statuses["old"] == "expired" and statuses["gone"] == "revoked"
    for name, status in (("old", "expired"), ("gone", "revoked"), ("tests", "active")):
        key_id = keys[name]["id"]
        row = re.search(rf'<tr id="key-{key_id}">.*?</tr>', page, re.S)
        assert row is not None and f'class="badge status-{status}">{status}<' in row.group(0), name
