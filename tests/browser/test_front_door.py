"""Signing in with what `qbox up` printed, and the pages' shell: navigation, status line, sign out."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import ADMIN, accessible, snapshot, sign_in
from tests.qbox_process import QboxUp


def test_the_first_admin_signs_in_with_the_printed_password(
        contexts: Callable[[], BrowserContext], qbox_web: QboxUp, admin_password: str) -> None:
    page = contexts().new_page()
    page.goto("/")
    expect(page).to_have_url(f"{qbox_web.base_url}/login")
    accessible(page)
    snapshot(page, "login")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    sign_in(page, ADMIN, admin_password)
    expect(page.locator("footer")).to_contain_text(f"Signed in as {ADMIN}")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Hosts")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{qbox_web.base_url}/login")
    page.goto("/sandboxes")
    expect(page).to_have_url(f"{qbox_web.base_url}/login?next=/sandboxes")


def test_a_member_sees_no_admin_pages_in_the_navigation(signed_in: Callable[..., Page]) -> None:
    page = signed_in("nav-member@example.com")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Sandboxes")).to_be_visible()
    for admin_only in ("Hosts", "Users", "Audit"):
        expect(nav.get_by_role("link", name=admin_only)).to_have_count(0)
