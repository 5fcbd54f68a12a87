"""The Hosts page (live bars, drain and uncordon, refused to a member) and the API Keys page
(a key made on the page works with curl until it is revoked there) in a real browser."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Callable

from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp


def curl_status(up: QboxUp, secret: str) -> str:
    """What the API answers this key, asked the way a user would ask it."""
    return subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {secret}",
         f"{up.base_url}/v1/sandboxes"], capture_output=True, text=True, timeout=30, check=True).stdout


def accept(messages: list[str]) -> Callable[[Dialog], None]:
    def answer(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()
    return answer


def test_the_admin_watches_drains_and_uncordons_a_host(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    with qbox_web.client() as api:
        host = api.get("/v1/hosts").json()[0]
        page = signed_in()
        page.goto("/hosts")
        row = page.locator(f"#host-{host['id']}")
        expect(row.get_by_role("rowheader")).to_contain_text(host["id"])
        for label in ("CPU", "Memory", "Disk", "Sandboxes"):
            bar = row.get_by_role("progressbar", name=label)
            expect(bar).to_be_visible()
            assert 0 <= int(bar.get_attribute("aria-valuenow") or "-1") <= 100, label
        expect(row.locator(".badge")).to_have_text("ready")
        accessible(page)
        snapshot(page, "hosts")
        try:
            asked: list[str] = []
            page.once("dialog", accept(asked))
            row.get_by_role("button", name=re.compile("^Drain")).click()
            expect(row.locator(".badge")).to_have_text("draining")
            assert asked and "no new sandboxes" in asked[0]
            assert api.get(f"/v1/hosts/{host['id']}").json()["status"] == "draining"
            row.get_by_role("button", name=re.compile("^Uncordon")).click()
            expect(row.locator(".badge")).to_have_text("ready")
            assert api.get(f"/v1/hosts/{host['id']}").json()["status"] == "ready"
            # The table keeps itself up to date: a drain through the API shows without a reload.
            assert api.post(f"/v1/hosts/{host['id']}/drain").status_code == 200
            expect(row.locator(".badge")).to_have_text("draining", timeout=10_000)
        finally:
            api.post(f"/v1/hosts/{host['id']}/uncordon")
        expect(row.locator(".badge")).to_have_text("ready", timeout=10_000)

        member = signed_in("m2@example.com")
        member.goto("/hosts")
        expect(member.get_by_role("heading", level=1)).to_have_text("Not allowed")
        expect(member.get_by_role("progressbar")).to_have_count(0)
        assert host["id"] not in member.content()


def test_a_key_made_on_the_page_works_until_it_is_revoked_there(
        signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    name = f"browser-{secrets.token_hex(3)}"
    page = signed_in()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=qbox_web.base_url)
    page.goto("/keys")
    accessible(page)
    snapshot(page, "keys")
    page.get_by_label("Name").fill(name)
    page.get_by_label("sandboxes:read", exact=True).check()
    page.get_by_label("Expires after (days)").fill("7")
    page.get_by_role("button", name="Create key").click()

    expect(page.get_by_role("heading", name="API key created")).to_be_visible()
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    secret = page.get_by_label("Secret").input_value()
    assert secret.startswith("qbox_")
    copy = page.locator('button[data-copy="new-key-secret"]')  # its name changes as it answers
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    accessible(page)
    snapshot(page, "key-created")
    assert curl_status(qbox_web, secret) == "200"

    page.goto("/keys")
    assert secret not in page.content()
    row = page.locator("tbody tr", has=page.get_by_role("rowheader", name=name, exact=True))
    expect(row.locator(".badge")).to_have_text("active")
    asked: list[str] = []
    page.once("dialog", accept(asked))
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    expect(row.locator(".badge")).to_have_text("revoked")
    assert asked and name in asked[0] and "cannot be undone" in asked[0]
    assert curl_status(qbox_web, secret) == "401"
    page.reload()
    expect(row.locator(".badge")).to_have_text("revoked")
    assert secret not in page.content()
