"""Signing in and out, the headers every page carries, assets, and errors as pages."""

from __future__ import annotations

import re
from pathlib import Path


from tests.unit.server.conftest import Harness, make_harness
from tests.unit.web.helpers import ORIGIN, PASSWORD, WebClient, new_browser, sign_in, text_of


def test_the_root_sends_a_stranger_to_the_login_form(harness: Harness) -> None:
    browser = new_browser(harness)
    r = browser.get("/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    form = browser.get("/login")
    assert form.status_code == 200 and form.headers["content-type"].startswith("text/html")
    assert 'name="email"' in form.text and 'name="password"' in form.text


def test_a_page_without_a_session_goes_to_login_and_back(harness: Harness) -> None:
    sign_in(harness, "carol@example.com")  # the user exists; this browser is not signed in
    browser = new_browser(harness)
    r = browser.get("/keys", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=/keys")
    r = browser.get("/keys", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.headers.get("hx-redirect") == "/login?next=/keys"
    r = browser.post("/login", data={"email": "carol@example.com", "password": PASSWORD, "next": "/keys"},
                     headers={"Origin": ORIGIN}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/keys")
    assert "HttpOnly" in r.headers["set-cookie"]


def test_a_wrong_password_shows_the_form_again(harness: Harness) -> None:
    sign_in(harness, "dave@example.com")
    browser = new_browser(harness)
    r = browser.post("/login", data={"email": "dave@example.com", "password": "not it at all"},
                     follow_redirects=False)
    assert r.status_code == 401
    assert "Wrong email or password." in text_of(r.text)
    assert "qbox_session" not in r.headers.get("set-cookie", "")


def test_login_never_sends_the_browser_to_another_site(harness: Harness) -> None:
    sign_in(harness, "erin@example.com")
    browser = new_browser(harness)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = browser.post("/login", data={"email": "erin@example.com", "password": PASSWORD, "next": target},
                         follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/sandboxes"), target
        browser.cookies.clear()


def test_sign_out_needs_our_origin_and_the_token(web_member: WebClient) -> None:
    r = web_member.client.post("/logout", data={"x": "1"}, headers={"Origin": "https://evil.example"},
                               follow_redirects=False)
    assert r.status_code == 403 and "cross-site request refused" in text_of(r.text)
    r = web_member.client.post("/logout", data={"csrf_token": web_member.csrf}, follow_redirects=False)
    assert r.status_code == 403  # no Origin at all: not a page of ours
    assert web_member.get("/login").status_code == 303  # still signed in
    r = web_member.client.post("/logout", data={"csrf_token": web_member.csrf}, headers={"Origin": ORIGIN},
                               follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert web_member.get("/login").status_code == 200  # signed out


def test_pages_carry_a_strict_policy_and_cannot_be_framed(harness: Harness) -> None:
    r = new_browser(harness).get("/login")
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["cache-control"] == "no-store"
    # No inline script on the page: every <script> names a file of ours.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.S)
    assert scripts and all('src="/assets/' in attrs and not body.strip() for attrs, body in scripts)
    api = harness.client.get("/v1/sandboxes", headers=harness.auth())
    assert api.headers["x-frame-options"] == "DENY"


def test_assets_are_served_by_content_hash_for_a_year(harness: Harness) -> None:
    page = new_browser(harness).get("/login").text
    urls = re.findall(r'(?:src|href)="(/assets/[0-9a-f]{16}/[^"]+)"', page)
    assert any(u.endswith("/vendor/htmx.min.js") for u in urls) and any(u.endswith("/app.css") for u in urls)
    for url in urls:
        r = harness.client.get(url)
        assert r.status_code == 200, url
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    htmx = next(u for u in urls if u.endswith("/vendor/htmx.min.js"))
    packed = harness.client.get(htmx, headers={"Accept-Encoding": "gzip"})
    plain = harness.client.get(htmx, headers={"Accept-Encoding": "identity"})
    assert packed.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert packed.content == plain.content  # the client unpacked it to the same bytes
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    stale = re.sub(r"/assets/[0-9a-f]{16}/", "/assets/0000000000000000/", urls[0])
    assert harness.client.get(stale).status_code == 404
    assert harness.client.get("/assets/0000000000000000/../../app.py").status_code == 404


def test_an_unknown_page_is_a_page_not_json(web_member: WebClient) -> None:
    r = web_member.get("/sandboxes-of-nobody")
    assert r.status_code == 404  # not under a page prefix: the API's 404
    r = web_member.get("/keys/nothing/here")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Not found" in text_of(r.text) and r.text.lstrip().startswith("<!doctype html>")
    assert "Signed in as" in text_of(r.text)


def test_another_site_cannot_sign_a_browser_in(harness: Harness) -> None:
    sign_in(harness, "frank@example.com")
    browser = new_browser(harness)
    r = browser.post("/login", data={"email": "frank@example.com", "password": PASSWORD},
                     headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and "qbox_session" not in r.headers.get("set-cookie", "")
    assert "own login page" in text_of(r.text)


def test_behind_a_proxy_changes_come_from_the_public_url(tmp_path: Path) -> None:
    """A load balancer ends TLS: the replica sees http://testserver, browsers are on the public
    URL (QBOX_PUBLIC_URL). Changes from there are ours; from anywhere else they are not."""
    for h in make_harness(tmp_path, database=None, public_url="https://qbox.example.com"):
        member = sign_in(h, "gina@example.com")
        r = member.client.post("/logout", data={"csrf_token": member.csrf}, follow_redirects=False,
                               headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = member.client.post("/logout", data={"csrf_token": member.csrf}, follow_redirects=False,
                               headers={"Origin": "https://qbox.example.com"})
        assert (r.status_code, r.headers["location"]) == (303, "/login")
