"""Signing in with what `qbox up` printed, and the pages' shell: navigation, status line, sign out."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Browser, BrowserContext, Page, expect

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


def test_signing_in_needs_nothing_but_the_keyboard(
        contexts: Callable[[], BrowserContext], qbox_web: QboxUp, admin_password: str) -> None:
    page = contexts().new_page()
    page.goto("/login")
    # The email field has the focus (autofocus lands a frame after load: wait for it).
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(ADMIN)
    page.keyboard.press("Tab")
    page.keyboard.type(admin_password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/sandboxes")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


PAGES = ("/sandboxes", "/templates", "/keys", "/hosts", "/users", "/audit")


def test_every_page_fits_a_narrow_window_in_the_dark(
        chromium: Browser, qbox_web: QboxUp, admin_password: str) -> None:
    """A phone-wide window with the system's dark setting: no page is wider than the window
    (wide tables scroll inside their own box), the dark colours apply, axe still passes."""
    context = chromium.new_context(base_url=qbox_web.base_url, viewport={"width": 390, "height": 844},
                                   color_scheme="dark")
    try:
        page = context.new_page()
        sign_in(page, ADMIN, admin_password)
        for path in PAGES:
            page.goto(path)
            expect(page.locator("main h1")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than the window"
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(21, 23, 27)", (path, background)
            accessible(page)
        snapshot(page, "audit-narrow-dark")
    finally:
        context.close()
