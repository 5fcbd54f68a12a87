"""The ports section of a sandbox's Overview: listed with Open and Copy, exposed, given a new
signed link and unexposed from the page (CSRF, audited as the API), refused to a stranger."""

from __future__ import annotations

import html
import re

from tests.unit.web.helpers import ORIGIN, WebClient, text_of
from tests.unit.web.test_sandbox_list import audited
from tests.unit.web.test_sandbox_page import is_not_found_page, spawn


def test_the_overview_lists_ports_with_open_and_copy(web_member: WebClient) -> None:
    sb = spawn(web_member, ports=[{"port": 8000}, {"port": 9000, "visibility": "signed_url"}])
    page = web_member.get(f"/sandboxes/{sb['id']}").text
    url = f"http://8000-{sb['id']}.localhost:8080/"
    assert f'id="port-url-8000" class="mono port-url" type="text" value="{url}" readonly' in page
    open_link = re.search(r'<a class="button" id="open-port-8000" href="([^"]+)" target="_blank" rel="([^"]+)"', page)
    assert open_link and open_link.group(1) == url and "noopener" in open_link.group(2)
    assert 'data-copy="port-url-8000"' in page and 'id="unexpose-port-8000"' in page
    # A signed link is what Open and Copy give, and it can be replaced.
    signed = web_member.api("GET", f"/v1/sandboxes/{sb['id']}/ports/9000").json()["signedUrl"]
    assert f'value="{html.escape(signed)}"' in page and 'id="rotate-port-9000"' in page
    assert 'id="rotate-port-8000"' not in page and "link until" in text_of(page)


def test_expose_rotate_and_unexpose_from_the_page(web_member: WebClient, web_admin: WebClient) -> None:
    sb = spawn(web_member)
    base = f"/sandboxes/{sb['id']}/ports"
    assert "No ports are exposed." in text_of(web_member.get(f"/sandboxes/{sb['id']}").text)
    r = web_member.post(base, data={"port": "3000", "visibility": "signed_url", "ttl": "600"})
    assert r.status_code == 200 and 'id="ports"' in r.text and "<html" not in r.text
    first = web_member.api("GET", f"/v1/sandboxes/{sb['id']}/ports/3000").json()
    assert first["visibility"] == "signed_url" and first["signedUrl"] in html.unescape(r.text)
    r = web_member.post(f"{base}/3000/signed-url")
    second = web_member.api("GET", f"/v1/sandboxes/{sb['id']}/ports/3000").json()["signedUrl"]
    assert r.status_code == 200 and second != first["signedUrl"] and second in html.unescape(r.text)
    # A plain form (no htmx) is sent back to the Overview; a privileged port needs the box ticked.
    r = web_member.post(base, data={"port": "80", "csrf_token": web_member.csrf}, htmx=False)
    assert r.status_code == 400
    r = web_member.post(base, data={"port": "80", "force": "on", "csrf_token": web_member.csrf}, htmx=False)
    assert r.status_code == 303 and r.headers["location"] == f"/sandboxes/{sb['id']}#ports"
    assert web_member.post(base, data={"port": "x"}).status_code == 400
    r = web_member.post(f"{base}/3000/unexpose")
    assert r.status_code == 200 and 'id="port-3000"' not in r.text and 'id="port-80"' in r.text
    for action in ("port.expose", "port.signed_url", "port.unexpose"):
        assert audited(web_admin, action, web_member), action


def test_changes_need_the_csrf_token_and_a_stranger_gets_not_found(web_member: WebClient,
                                                                    stranger: WebClient) -> None:
    sb = spawn(web_member, ports=[{"port": 8000}])
    base = f"/sandboxes/{sb['id']}/ports"
    forged = web_member.client.post(base, data={"port": "8001"}, headers={"Origin": ORIGIN})
    assert forged.status_code == 403
    for path in (base, f"{base}/8000/unexpose", f"{base}/8000/signed-url"):
        r = stranger.post(path, data={"port": "8001", "csrf_token": stranger.csrf}, htmx=False)
        assert is_not_found_page(r), path
    assert is_not_found_page(stranger.get(f"/sandboxes/{sb['id']}"))
    listed = web_member.api("GET", f"/v1/sandboxes/{sb['id']}/ports").json()["ports"]
    assert [p["port"] for p in listed] == [8000]
