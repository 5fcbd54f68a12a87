"""Preview URLs in Chromium: ``http://{port}-{sandbox}.localhost:{listener}/`` opens with no DNS
set-up (Chromium resolves every *.localhost to loopback), a public port's page shows, and a
private one's after the dashboard's sign-in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import ADMIN
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.browser

PAGE = "<!doctype html><html lang=en><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"


def serve_page(api: httpx.Client, sandbox_id: str, port: int, title: str, visibility: str) -> str:
    """``python3 -m http.server`` on ``port`` serving a page titled ``title``; its preview URL."""
    r = api.put(f"/v1/sandboxes/{sandbox_id}/file", params={"path": f"/tmp/site{port}/index.html"},
                content=PAGE.format(title=title).encode())
    assert r.status_code == 204, r.text
    r = api.post(f"/v1/sandboxes/{sandbox_id}/commands", json={
        "cmd": "python3", "args": ["-m", "http.server", str(port), "--directory", f"/tmp/site{port}"]})
    assert r.status_code == 201, r.text
    r = api.post(f"/v1/sandboxes/{sandbox_id}/ports", json={"port": port, "visibility": visibility})
    assert r.status_code in (200, 201), r.text
    deadline = time.monotonic() + 30
    while not api.post(f"/v1/sandboxes/{sandbox_id}/ports/{port}/probe").json().get("reachable"):
        assert time.monotonic() < deadline, "the page's server never listened"
        time.sleep(0.2)
    return str(r.json()["url"])


@pytest.fixture
def site(qbox_web: QboxUp) -> Iterator[dict[str, str]]:
    with qbox_web.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": "tpl_python"})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
        try:
            yield {"public": serve_page(api, sandbox_id, 8000, "A public preview", "public"),
                   "private": serve_page(api, sandbox_id, 8001, "A private preview", "private")}
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")


def test_a_public_preview_opens_and_a_private_one_after_signing_in(
        site: dict[str, str], contexts: Callable[[], BrowserContext], qbox_web: QboxUp,
        admin_password: str) -> None:
    assert site["public"].startswith("http://8000-sb_") and f".localhost:{qbox_web.port}/" in site["public"]
    page = contexts().new_page()
    page.goto(site["public"])
    expect(page.get_by_role("heading", name="A public preview")).to_be_visible()

    seen: list[str] = []
    page.on("response", lambda r: seen.append(f"{r.status} {r.url} -> {r.headers.get('location')} "
                                              f"{r.headers.get('set-cookie', '')[:40]}"))
    page.goto(site["private"])
    # Sent to the dashboard's sign-in on the control plane's origin, then back.
    page.wait_for_url(f"http://localhost:{qbox_web.port}/login?**")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password").fill(admin_password)
    page.get_by_role("button", name="Sign in").click()
    try:
        page.wait_for_url(site["private"])
    except PlaywrightTimeout:
        raise AssertionError(f"at {page.url}; answers: {seen}") from None
    expect(page.get_by_role("heading", name="A private preview")).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies(site["private"])}
    assert cookies["qbox_preview"]["httpOnly"] and "qbox_session" not in cookies
    # Signed in already: another visit goes straight through, the cookie carries it.
    page.reload()
    expect(page.get_by_role("heading", name="A private preview")).to_be_visible()
