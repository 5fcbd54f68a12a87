"""A sandbox's Environment section in a real browser: masked until Reveal, set and delete, a
refusal shown, and a command started afterwards sees the value."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp


def test_set_reveal_and_delete_envs(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    with qbox_web.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": "tpl_python", "envs": {"GITHUB_TOKEN": "ghp-from-spawn"}})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
        try:
            page = signed_in()
            page.goto(f"/sandboxes/{sandbox_id}")
            section = page.locator("#envs")
            expect(section.get_by_test_id("env-value-GITHUB_TOKEN")).to_have_text("********")
            expect(section.get_by_test_id("env-value-QBOX_SANDBOX_ID")).to_have_text(sandbox_id)
            page.get_by_label("Name", exact=True).fill("GREETING")
            page.get_by_label("Value", exact=True).fill("hello from the page")
            page.get_by_role("button", name="Set", exact=True).click()
            expect(section.get_by_test_id("env-value-GREETING")).to_have_text("hello from the page")
            page.get_by_label("Name", exact=True).fill("MY_SETTING")
            page.get_by_label("Value", exact=True).fill("quiet-value")
            page.get_by_label("secret").check()
            page.get_by_role("button", name="Set", exact=True).click()
            expect(section.get_by_test_id("env-value-MY_SETTING")).to_have_text("********")
            accessible(page)
            snapshot(page, "sandbox-envs")
            page.get_by_role("button", name="Reveal secret values").click()
            expect(section.get_by_test_id("env-value-MY_SETTING")).to_have_text("quiet-value")
            expect(section.get_by_test_id("env-value-GITHUB_TOKEN")).to_have_text("ghp-from-spawn")
            page.get_by_role("button", name="Hide secret values").click()
            expect(section.get_by_test_id("env-value-MY_SETTING")).to_have_text("********")
            # A refusal is shown, nothing changes.
            page.get_by_label("Name", exact=True).fill("QBOX_MINE")
            page.get_by_label("Value", exact=True).fill("x")
            page.get_by_role("button", name="Set", exact=True).click()
            expect(page.locator("#alerts")).to_contain_text("reserved")
            out = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "env"}).json()["stdout"]
            assert "GREETING=hello from the page" in out and "MY_SETTING=quiet-value" in out
            page.get_by_role("button", name="Delete GREETING").click()
            expect(section.locator("#env-GREETING")).to_have_count(0)
            out = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "env"}).json()["stdout"]
            assert "GREETING=" not in out
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
