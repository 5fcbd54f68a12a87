"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

One ``qbox up`` (crun, the built-in python template) and one Chromium serve
this package, and end with it: Playwright's sync API keeps an event loop
running in the thread while it is open, which the asyncio tests after this
package could not run beside. Each test gets fresh browser contexts, so
cookies never leak between tests. ``signed_in`` opens a page as a user; ``accessible`` runs
axe-core (from node_modules) on the page and fails on serious or critical
violations; ``snapshot`` saves a screenshot under test-artifacts/screenshots.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.qbox_process import ROOT, QboxUp, running_qbox

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# Headless as root in a closed network: no sandbox (root), no GPU, and no
# background connections to Google's services (refused here, slowly).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "browser tests password"
ADMIN = "admin@localhost"


@pytest.fixture(scope="package")
def web_base() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="qbox-web-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="package")
def image_dir(web_base: Path) -> Path:
    """Where the tests put images for templates to be built from offline (``QBOX_IMPORT_DIRS``)."""
    path = web_base / "images"
    path.mkdir()
    return path


@pytest.fixture(scope="package")
def qbox_web(web_base: Path, image_dir: Path) -> Iterator[QboxUp]:
    with running_qbox(web_base / "data", env={"QBOX_IMPORT_DIRS": str(image_dir)}) as up:
        yield up


@pytest.fixture(scope="package")
def admin_password(qbox_web: QboxUp) -> str:
    """What `qbox up` printed at its first start, as it keeps it."""
    return (qbox_web.data_dir / "admin-password").read_text().strip()


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def contexts(chromium: Browser, qbox_web: QboxUp) -> Iterator[Callable[[], BrowserContext]]:
    """New browser contexts (each its own cookies) on qbox's origin, closed after the test."""
    made: list[BrowserContext] = []

    def new() -> BrowserContext:
        context = chromium.new_context(base_url=qbox_web.base_url, viewport={"width": 1366, "height": 800},
                                       accept_downloads=True)
        context.set_default_timeout(20_000)
        made.append(context)
        return context

    yield new
    for context in made:
        context.close()


def add_user(up: QboxUp, email: str, *, role: str = "member") -> str:
    """A user with the tests' password, made through the API; their id."""
    with up.client() as api:
        r = api.post("/v1/users", json={"email": email, "role": role, "password": PASSWORD})
        if r.status_code == 409:
            found = [u for u in api.get("/v1/users").json() if u["email"] == email]
            return str(found[0]["id"])
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/sandboxes")


@pytest.fixture
def signed_in(contexts: Callable[[], BrowserContext], qbox_web: QboxUp,
              admin_password: str) -> Callable[..., Page]:
    """``signed_in()`` is a page of the first admin; ``signed_in("bob@example.com")`` of a member."""

    def open_as(email: str = ADMIN, *, role: str = "member") -> Page:
        password = admin_password
        if email != ADMIN:
            add_user(qbox_web, email, role=role)
            password = PASSWORD
        page = contexts().new_page()
        sign_in(page, email, password)
        return page

    return open_as


def accessible(page: Page) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    if page.evaluate("typeof window.axe") == "undefined":
        page.evaluate(AXE.read_text())  # through the DevTools protocol: the page's CSP stays on
    result: dict[str, Any] = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page.url}: " + "; ".join(bad)


def snapshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def api(up: QboxUp) -> httpx.Client:
    return up.client()
