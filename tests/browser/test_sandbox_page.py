"""A sandbox's page in a real browser: Overview counting down, Processes (output, kill, run), Logs live."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp


def test_a_sandbox_page_from_overview_to_processes_and_logs(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    with qbox_web.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": "tpl_python", "timeoutSeconds": 900, "labels": {"name": "page-tour"}})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
        try:
            page = signed_in()
            page.goto(f"/sandboxes/{sandbox_id}")
            expect(page.get_by_role("heading", level=1)).to_contain_text("page-tour")
            expect(page.get_by_test_id("overview-status")).to_have_text("running")
            countdown = page.locator("time[data-countdown]")
            expect(countdown).to_have_text(re.compile(r"^1[45]m \d+s$"))
            before = countdown.inner_text()
            expect(countdown).not_to_have_text(before)  # it counts down
            accessible(page)
            snapshot(page, "sandbox-overview")

            r = api.post(f"/v1/sandboxes/{sandbox_id}/commands",
                         json={"cmd": "sh", "args": ["-c", "echo hello-proc; sleep 300"]})
            assert r.status_code == 201, r.text
            pid = r.json()["pid"]
            page.get_by_role("navigation", name="Sandbox").get_by_role("link", name="Processes").click()
            row = page.locator(f"#process-{pid}")
            expect(row).to_contain_text("sleep 300")
            expect(row).to_contain_text("running")
            page.get_by_role("link", name=f"Output of process {pid}").click()
            expect(page.locator("#process-stdout")).to_contain_text("hello-proc")
            page.get_by_label("Run a command").fill("echo typed-$((6 * 7))")
            page.get_by_role("button", name="Run").click()
            expect(page.locator("#process-stdout")).to_contain_text("typed-42")
            expect(page.get_by_label("Run a command")).to_have_value("")
            expect(page.locator("#processes-list")).to_contain_text("typed-$((6 * 7))")
            accessible(page)
            snapshot(page, "sandbox-processes")
            page.get_by_role("button", name=f"Kill process {pid}", exact=True).click()
            expect(row).to_contain_text("killed (signal 15)")
            assert api.get(f"/v1/sandboxes/{sandbox_id}/commands/{pid}").json()["alive"] is False
            # A long output is shown scrolled to its end.
            page.get_by_label("Run a command").fill("seq 1 3000")
            page.get_by_role("button", name="Run").click()
            expect(page.locator("#process-stdout")).to_contain_text("2999\n3000")
            page.wait_for_function("""() => { const box = document.getElementById("process-stdout");
                return box.scrollHeight > box.clientHeight
                    && box.scrollHeight - box.scrollTop - box.clientHeight < 8; }""")

            member = signed_in("m@example.com")
            answer = member.goto(f"/sandboxes/{sandbox_id}")
            assert answer is not None and answer.status == 404
            expect(member.get_by_role("heading", name="Not found")).to_be_visible()
            expect(member.locator("main")).not_to_contain_text("page-tour")

            page.get_by_role("navigation", name="Sandbox").get_by_role("link", name="Logs").click()
            log = page.locator("#log-box")
            expect(log).to_contain_text("spawn requested from template tpl_python")
            expect(page.locator("#log-lines")).to_contain_text("Live")
            accessible(page)
            snapshot(page, "sandbox-logs")
            assert api.delete(f"/v1/sandboxes/{sandbox_id}").status_code == 204
            # The open page picks the end up by itself.
            expect(log).to_contain_text("killed by DELETE")
            expect(page.locator("#log-lines")).to_contain_text("The sandbox has ended")
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
