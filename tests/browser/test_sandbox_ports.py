"""A sandbox's Ports section in Chromium: an exposed port is listed with its URL, Copy puts the URL
on the clipboard, Open shows the sandbox's page in a new tab; a port exposed and unexposed from
the form."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp

PAGE = ("<!doctype html><html lang=en><head><title>ports test</title></head>"
        "<body><h1>served in the sandbox</h1></body></html>")


def test_the_ports_list_with_open_and_copy(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    with qbox_web.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": "tpl_python", "ports": [{"port": 8000, "visibility": "public"}]})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
        try:
            api.put(f"/v1/sandboxes/{sandbox_id}/file", params={"path": "/tmp/site/index.html"},
                    content=PAGE.encode())
            r = api.post(f"/v1/sandboxes/{sandbox_id}/commands", json={
                "cmd": "python3", "args": ["-m", "http.server", "8000", "--directory", "/tmp/site"]})
            assert r.status_code == 201, r.text
            deadline = time.monotonic() + 30
            while not api.post(f"/v1/sandboxes/{sandbox_id}/ports/8000/probe").json()["reachable"]:
                assert time.monotonic() < deadline, "http.server never listened"
                time.sleep(0.2)
            url = f"http://8000-{sandbox_id}.localhost:{qbox_web.port}/"

            page = signed_in()
            page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=qbox_web.base_url)
            page.goto(f"/sandboxes/{sandbox_id}")
            section = page.locator("#ports")
            expect(section.get_by_label("Preview URL of port 8000")).to_have_value(url)
            opener = section.get_by_role("link", name="Open port 8000 in a new tab")
            expect(opener).to_have_attribute("href", url)
            expect(opener).to_have_attribute("target", "_blank")
            assert "noopener" in (opener.get_attribute("rel") or "")
            copy = section.get_by_role("button", name="Copy the URL of port 8000")
            copy.click()
            expect(copy).to_have_text("Copied")
            assert page.evaluate("navigator.clipboard.readText()") == url
            with page.context.expect_page() as opened:
                opener.click()
            preview = opened.value
            expect(preview.get_by_role("heading", name="served in the sandbox")).to_be_visible()
            assert preview.url == url
            preview.close()
            accessible(page)
            snapshot(page, "sandbox-ports")

            # Expose another from the form, then unexpose it.
            section.get_by_label("Port", exact=True).fill("3000")
            section.get_by_role("button", name="Expose", exact=True).click()
            expect(section.get_by_label("Preview URL of port 3000")).to_have_value(
                f"http://3000-{sandbox_id}.localhost:{qbox_web.port}/")
            section.get_by_role("button", name="Stop exposing port 3000").click()
            expect(section.locator("#port-3000")).to_have_count(0)
            assert [p["port"] for p in api.get(f"/v1/sandboxes/{sandbox_id}/ports").json()["ports"]] == [8000]
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
