"""The admins' Users and Audit pages in a real browser; a member is refused both."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ADMIN, accessible, sign_in, snapshot
from tests.qbox_process import QboxUp


def test_an_admin_adds_a_user_and_disables_them(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    email = f"added-{secrets.token_hex(3)}@example.com"
    page = signed_in()
    page.goto("/users")
    expect(page.get_by_role("heading", name="Users", level=1)).to_be_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role").select_option("member")
    page.get_by_label("Initial password (optional)").fill("a password long enough")
    page.get_by_role("button", name="Add user").click()
    expect(page).to_have_url(re.compile(r"/users\?added=usr_"))
    expect(page.get_by_role("status").filter(has_text=f"Added {email}.")).to_be_visible()
    row = page.get_by_role("row").filter(has_text=email)
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("0 / ")  # their live sandboxes against their quota
    accessible(page)
    snapshot(page, "users")

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Disable {email}").click()
    expect(row.locator(".badge")).to_have_text("disabled")
    expect(page.locator("#alerts")).to_contain_text(f"Disabled {email}.")
    expect(row.get_by_role("button")).to_have_count(0)
    with qbox_web.client() as api:
        listed = {u["email"]: u for u in api.get("/v1/users").json()}
    assert listed[email]["status"] == "disabled"


def test_the_audit_log_filters_pages_and_verifies(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    with qbox_web.client() as api:
        for n in range(30):  # refused user.create entries: more than one page of 25, and no user to show for it
            assert api.post("/v1/users", json={"email": f"not-an-email-{n}"}).status_code == 400
        created = api.post("/v1/users", json={"email": f"audited-{secrets.token_hex(3)}@example.com"})
        assert created.status_code == 201
    user_id = created.json()["id"]

    page = signed_in()
    page.goto("/audit")
    expect(page.locator("#chain")).to_contain_text(re.compile(r"Chain verified: \d+ entries, intact\."))
    page.get_by_label("Action").fill("user.create")
    page.get_by_label("Per page").select_option("25")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"action=user\.create.*limit=25"))
    rows = page.locator("#audit-entries tbody tr")
    expect(rows).to_have_count(25)
    # Refused requests are audited after their answer, so the last of them may be stored after
    # the user's creation (written with the change): the entry is on the first page, not always first.
    mine = rows.filter(has_text=user_id)
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("user.create")
    expect(mine).to_contain_text("201 ok")
    expect(page.locator("#chain")).to_contain_text("intact")
    accessible(page)
    snapshot(page, "audit")

    first_page = rows.locator("td:first-child .muted").all_inner_texts()
    page.get_by_role("link", name="Older").click()
    expect(page.get_by_role("navigation", name="Audit log pages")).to_contain_text("Page 2")
    expect(page).to_have_url(re.compile(r"action=user\.create.*limit=25.*cursor="))
    expect(page.get_by_label("Action")).to_have_value("user.create")
    expect(rows.first).to_be_visible()
    second_page = rows.locator("td:first-child .muted").all_inner_texts()
    assert second_page and not set(second_page) & set(first_page)
    for action in rows.locator("td:nth-child(3)").all_inner_texts():
        assert action == "user.create"
    page.get_by_role("link", name="Newer").click()
    expect(rows.filter(has_text=user_id)).to_have_count(1)


def test_a_member_gets_the_refusal_page_without_entries(signed_in: Callable[..., Page]) -> None:
    page = signed_in("m3@example.com")
    for path in ("/audit", "/users"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        expect(page.get_by_role("heading", name="Not allowed", level=1)).to_be_visible()
        expect(page.locator("#audit-entries, #users-table, #chain")).to_have_count(0)
        expect(page.locator("main")).not_to_contain_text("admin@localhost")
        accessible(page)


def test_both_pages_fit_a_narrow_window_in_the_dark(chromium: Browser, qbox_web: QboxUp, admin_password: str) -> None:
    context = chromium.new_context(base_url=qbox_web.base_url, viewport={"width": 390, "height": 844},
                                   color_scheme="dark")
    try:
        page = context.new_page()
        sign_in(page, ADMIN, admin_password)
        for path in ("/users", "/audit"):
            page.goto(path)
            expect(page.locator("main h1")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0, path
            accessible(page)
    finally:
        context.close()
