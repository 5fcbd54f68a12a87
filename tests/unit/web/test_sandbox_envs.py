"""The environment section of a sandbox's Overview: masked until Reveal, set (secret or not)
and deleted from the page (CSRF, audited as the API without values), refused to a stranger."""

from __future__ import annotations

import html

from tests.unit.web.helpers import ORIGIN, WebClient, text_of
from tests.unit.web.test_sandbox_list import audited
from tests.unit.web.test_sandbox_page import is_not_found_page, spawn


def test_the_overview_masks_secrets_until_revealed(web_member: WebClient) -> None:
    sb = spawn(web_member, envs={"PLAIN": "visible", "API_TOKEN": "hidden-token-value"})
    page = web_member.get(f"/sandboxes/{sb['id']}").text
    assert 'id="envs"' in page and 'data-testid="env-value-PLAIN"' in page
    assert "visible" in page and "hidden-token-value" not in page and "********" in page
    assert sb["id"] in page  # QBOX_SANDBOX_ID, the platform's
    r = web_member.get(f"/sandboxes/{sb['id']}/envs?reveal=true", htmx=True)
    assert r.status_code == 200 and "hidden-token-value" in r.text and "<html" not in r.text
    assert 'id="hide-envs"' in r.text
    # A plain link to the section goes to the Overview.
    r = web_member.get(f"/sandboxes/{sb['id']}/envs")
    assert r.status_code == 303 and r.headers["location"] == f"/sandboxes/{sb['id']}#envs"


def test_set_and_delete_from_the_page(web_member: WebClient, web_admin: WebClient) -> None:
    sb = spawn(web_member)
    base = f"/sandboxes/{sb['id']}/envs"
    r = web_member.post(base, data={"key": "GREETING", "value": "hi <there>"})
    assert r.status_code == 200 and 'id="env-GREETING"' in r.text
    assert html.escape("hi <there>") in r.text and "<there>" not in r.text
    r = web_member.post(base, data={"key": "MINE", "value": "shh-value", "secret": "on"})
    assert "shh-value" not in r.text
    assert web_member.api("GET", f"/v1/sandboxes/{sb['id']}/envs?mask=true").json()["envs"][0] == {
        "key": "GREETING", "value": "hi <there>", "source": "user", "secret": False}
    out = web_member.api("POST", f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "env"}).json()
    assert "MINE=shh-value" in out["stdout"]
    # Readable refusals.
    r = web_member.post(base, data={"key": "QBOX_MINE", "value": "x"})
    assert r.status_code == 400 and "reserved" in text_of(r.text)
    assert web_member.post(base, data={"key": "", "value": "x"}).status_code == 400
    r = web_member.post(f"{base}/delete", data={"key": "GREETING"})
    assert r.status_code == 200 and 'id="env-GREETING"' not in r.text and 'id="env-MINE"' in r.text
    r = web_member.post(f"{base}/delete", data={"key": "MINE", "csrf_token": web_member.csrf}, htmx=False)
    assert r.status_code == 303 and r.headers["location"] == f"/sandboxes/{sb['id']}#envs"
    for action in ("env.set", "env.delete"):
        entries = audited(web_admin, action, web_member)
        assert entries and "shh-value" not in str(entries), action


def test_changes_need_the_csrf_token_and_a_stranger_gets_not_found(web_member: WebClient,
                                                                    stranger: WebClient) -> None:
    sb = spawn(web_member, envs={"KEEP": "alices-value"})
    base = f"/sandboxes/{sb['id']}/envs"
    forged = web_member.client.post(base, data={"key": "A", "value": "1"}, headers={"Origin": ORIGIN})
    assert forged.status_code == 403
    for path in (base, f"{base}/delete"):
        r = stranger.post(path, data={"key": "KEEP", "value": "x", "csrf_token": stranger.csrf}, htmx=False)
        assert is_not_found_page(r), path
    r = stranger.get(f"{base}?reveal=true", htmx=True)
    assert r.status_code == 404 and "alices-value" not in r.text
    listed = web_member.api("GET", f"/v1/sandboxes/{sb['id']}/envs").json()["envs"]
    assert [(e["key"], e["value"]) for e in listed if e["source"] == "user"] == [("KEEP", "alices-value")]
