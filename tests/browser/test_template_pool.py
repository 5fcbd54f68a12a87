"""A template's warm pool in a real browser: an admin sets a pool of one on the built-in python
template from its page and watches it become ready without a reload."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp

TEMPLATE = "tpl_python"


def _drained(up: QboxUp, timeout: float = 120) -> None:
    """The pool back to none and empty: no pooled sandbox outlives the test."""
    deadline = time.monotonic() + timeout
    with up.client() as api:
        r = api.patch(f"/v1/templates/{TEMPLATE}", json={"warmPool": {"size": 0}})
        assert r.status_code == 200, r.text
        while True:
            pool = api.get(f"/v1/templates/{TEMPLATE}").json()["warmPool"]
            if pool["ready"] == pool["booting"] == 0:
                return
            assert time.monotonic() < deadline, f"the pool was never emptied: {pool}"
            time.sleep(1)


def test_set_a_pool_of_one_and_see_it_become_ready(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    page = signed_in()
    try:
        page.goto(f"/templates/{TEMPLATE}")
        expect(page.get_by_role("heading", name="Warm pool")).to_be_visible()
        expect(page.get_by_test_id("pool-size")).to_have_text("0")
        page.evaluate("window.notReloaded = true")

        page.get_by_label("Pool size").fill("1")
        page.get_by_role("button", name="Save pool settings").click()
        expect(page.get_by_test_id("pool-size")).to_contain_text("1")
        # The pool boots its sandbox in the background; the page's poll shows it ready.
        expect(page.get_by_test_id("pool-ready")).to_have_text("1", timeout=180_000)
        expect(page.get_by_test_id("pool-booting")).to_have_text("0")
        assert page.evaluate("window.notReloaded") is True
        accessible(page)
        snapshot(page, "template-pool")

        page.get_by_role("link", name="Templates").first.click()
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name="python", exact=True))
        expect(row.get_by_test_id(f"pool-{TEMPLATE}")).to_have_text("1/1")
        accessible(page)
    finally:
        page.close()
        _drained(qbox_web)
