"""The Sandboxes page in a real browser: spawn from the form, watch it run, extend it, kill it;
and a form on another site cannot kill a sandbox with the signed-in user's cookie."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp


def kill_all(up: QboxUp, sandbox_ids: list[str]) -> None:
    with up.client() as api:
        for sandbox_id in sandbox_ids:
            api.delete(f"/v1/sandboxes/{sandbox_id}")  # 409 if it has ended already


def test_spawn_extend_and_kill_from_the_list(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    page = signed_in()
    spawned: list[str] = []
    try:
        page.goto("/sandboxes")
        page.locator("summary", has_text="New sandbox").click()
        form = page.locator("#spawn-form")
        form.get_by_label("Template").select_option(label="python")
        form.get_by_label("Name").fill("from-the-browser")
        form.get_by_label("Timeout (seconds)").fill("600")
        form.get_by_label("Labels").fill("team=browser")
        form.get_by_role("button", name="Start sandbox").click()
        page.wait_for_url(re.compile(r"/sandboxes/sb_[a-z0-9]+$"))
        sandbox_id = page.url.rsplit("/", 1)[1]
        spawned.append(sandbox_id)

        page.goto("/sandboxes")
        row = page.locator("#sandbox-rows tr").filter(has=page.get_by_role("link", name=sandbox_id))
        expect(row).to_contain_text("from-the-browser")
        expect(row.locator(".badge")).to_have_text("running", timeout=60_000)  # the rows refresh themselves
        expect(row.locator("time[data-countdown]")).to_have_text(re.compile(r"^(9|10)m \d+s$"))
        accessible(page)
        snapshot(page, "sandboxes")

        row.get_by_label(f"New timeout of {sandbox_id}, in seconds").fill("3600")
        row.get_by_role("button", name=f"Set the timeout of {sandbox_id}").click()
        expect(page.locator("#alerts")).to_contain_text("timeout is 3600 s")
        expect(row.locator("time[data-countdown]")).to_have_text(re.compile(r"^(59m \d+s|1h 0m)$"))
        with qbox_web.client() as api:
            assert api.get(f"/v1/sandboxes/{sandbox_id}").json()["timeoutSeconds"] == 3600

        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name=f"Kill {sandbox_id}").click()
        expect(row.locator(".badge")).to_have_text("killed")
        with qbox_web.client() as api:
            assert api.get(f"/v1/sandboxes/{sandbox_id}").json()["status"] == "killed"
        page.goto("/sandboxes?status=running")
        expect(page.get_by_role("link", name=sandbox_id)).to_have_count(0)
    finally:
        kill_all(qbox_web, spawned)


@contextmanager
def another_site(html: str) -> Iterator[str]:
    """A page served from another origin (another port): its URL."""
    body = html.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_form_on_another_site_cannot_kill_a_sandbox(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    with qbox_web.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": "tpl_python", "labels": {"name": "csrf-target"}})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
    try:
        page = signed_in()
        evil = (f'<!doctype html><html lang="en"><title>Win a prize</title>'
                f'<form method="post" action="{qbox_web.base_url}/sandboxes/{sandbox_id}/kill">'
                f'<input type="hidden" name="csrf_token" value="guessed">'
                f'<button type="submit">Claim</button></form></html>')
        with another_site(evil) as url:
            page.goto(url)
            page.get_by_role("button", name="Claim").click()
            # Another port of the same host is the same site: the session cookie went along,
            # and the Origin and the token are what refused it.
            expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
            expect(page.locator("main")).to_contain_text("cross-site request refused")
        with qbox_web.client() as api:
            assert api.get(f"/v1/sandboxes/{sandbox_id}").json()["status"] == "running"
        page.goto("/sandboxes")
        row = page.locator("#sandbox-rows tr").filter(has=page.get_by_role("link", name=sandbox_id))
        expect(row.locator(".badge")).to_have_text("running")
    finally:
        kill_all(qbox_web, [sandbox_id])
