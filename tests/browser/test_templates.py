"""The Templates pages in a real browser: create a template from a form, watch its build log
stream in and its status turn ready, rebuild it, delete it.

Building from an image needs an image the host can read offline: the tests' small busybox
image goes into the shared `qbox up`'s import directory (``QBOX_IMPORT_DIRS``, where admins'
``oci:`` refs may point).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.oci_images import busybox_layout
from tests.qbox_process import QboxUp

NAME = "dash-built"


@pytest.fixture(scope="module")
def busybox(image_dir: Path) -> str:
    return busybox_layout(image_dir / "busybox")


def test_create_a_template_and_watch_it_build_then_rebuild_and_delete_it(
        signed_in: Callable[..., Page], qbox_web: QboxUp, busybox: str) -> None:
    page = signed_in()
    try:
        page.goto("/templates")
        expect(page.get_by_role("heading", name="Templates")).to_be_visible()
        expect(page.get_by_role("link", name="python", exact=True)).to_be_visible()

        page.get_by_role("link", name="New template").click()
        page.get_by_label("Name", exact=True).fill("Not A Name")
        page.get_by_label("Image", exact=True).fill(busybox)
        page.get_by_label("Steps, one a line").fill("sleep 2\necho built-by-the-dashboard")
        page.get_by_role("button", name="Create and build").click()
        expect(page.locator("#name-problem")).to_contain_text("lowercase letters")
        expect(page.get_by_label("Image", exact=True)).to_have_value(busybox)  # what was typed stays
        accessible(page)
        snapshot(page, "template-new")

        page.get_by_label("Name", exact=True).fill(NAME)
        page.get_by_role("button", name="Create and build").click()
        expect(page).to_have_url(f"{qbox_web.base_url}/templates/tpl_{NAME}")
        status = page.locator("#template-status")
        expect(status).to_have_text("building")
        log = page.locator("#build-log")
        # Streamed into the page while it builds; the summary turns ready without a reload.
        expect(log).to_contain_text("built-by-the-dashboard", timeout=120_000)
        expect(status).to_have_text("ready", timeout=120_000)
        expect(log).to_contain_text("template ready")
        expect(page.get_by_text("RUN echo built-by-the-dashboard")).to_be_visible()
        accessible(page)
        snapshot(page, "template-build")

        page.get_by_role("button", name="Rebuild").click()
        expect(status).to_have_text("building")
        expect(log).to_contain_text("(build 2)", timeout=120_000)
        expect(status).to_have_text("ready", timeout=120_000)

        page.get_by_role("link", name="Templates").first.click()
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=NAME, exact=True))
        expect(row).to_contain_text("private")
        expect(row).to_contain_text("ready")
        accessible(page)
        snapshot(page, "templates")
        page.get_by_role("link", name=NAME, exact=True).click()

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete").click()
        expect(page).to_have_url(f"{qbox_web.base_url}/templates")
        expect(page.get_by_role("link", name=NAME, exact=True)).to_have_count(0)
        with qbox_web.client() as api:
            assert api.get(f"/v1/templates/tpl_{NAME}").status_code == 404
    finally:
        with qbox_web.client() as api:
            api.delete(f"/v1/templates/tpl_{NAME}")
