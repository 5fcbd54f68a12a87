"""The Files tab in a real browser: upload with progress, download back byte for byte, mkdir, delete, view."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp


def test_files_upload_download_mkdir_delete_and_view(signed_in: Callable[..., Page], qbox_web: QboxUp) -> None:
    data = os.urandom(384 * 1024)
    with qbox_web.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60",
                     json={"templateId": "tpl_python", "labels": {"name": "files-tour"}})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
        try:
            r = api.put(f"/v1/sandboxes/{sandbox_id}/file", params={"path": "/home/user/hello.txt"},
                        content=b"hello from the files tab\n")
            assert r.status_code == 204, r.text
            page = signed_in()
            page.goto(f"/sandboxes/{sandbox_id}")
            page.get_by_role("navigation", name="Sandbox").get_by_role("link", name="Files").click()
            listing = page.locator("#files-listing")
            expect(listing).to_contain_text("in /home/user")
            expect(listing.get_by_role("link", name="hello.txt", exact=True)).to_be_visible()

            page.get_by_label("Upload files into this directory").set_input_files(
                {"name": "random.bin", "mimeType": "application/octet-stream", "buffer": data})
            page.get_by_role("button", name="Upload", exact=True).click()
            done = page.locator("#file-upload-progress li[data-state=done]")
            expect(done).to_contain_text("random.bin")
            expect(done).to_contain_text("uploaded (384.0 KiB)")
            bar = page.get_by_label("Uploading random.bin")
            expect(bar).to_have_js_property("value", bar.evaluate("el => el.max"))
            expect(listing.get_by_role("link", name="Download random.bin")).to_be_visible()
            assert api.get(f"/v1/sandboxes/{sandbox_id}/download",
                           params={"path": "/home/user/random.bin"}).content == data

            with page.expect_download() as downloading:
                listing.get_by_role("link", name="Download random.bin").click()
            download = downloading.value
            assert download.suggested_filename == "random.bin"
            assert Path(download.path()).read_bytes() == data

            page.get_by_label("New directory").fill("made-here")
            page.get_by_role("button", name="Make directory").click()
            expect(listing.get_by_role("link", name="made-here/", exact=True)).to_be_visible()
            expect(page.get_by_label("New directory")).to_have_value("")
            assert api.get(f"/v1/sandboxes/{sandbox_id}/stat",
                           params={"path": "/home/user/made-here"}).json()["isDir"] is True
            accessible(page)
            snapshot(page, "sandbox-files")
            page.set_viewport_size({"width": 390, "height": 844})  # a phone: the table scrolls in its box
            assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
            page.set_viewport_size({"width": 1366, "height": 800})

            page.once("dialog", lambda dialog: dialog.accept())
            listing.get_by_role("button", name="Delete made-here").click()
            expect(listing.get_by_role("link", name="made-here/", exact=True)).to_have_count(0)
            assert api.get(f"/v1/sandboxes/{sandbox_id}/stat",
                           params={"path": "/home/user/made-here"}).json()["exists"] is False

            listing.get_by_role("link", name="hello.txt", exact=True).click()
            expect(page.get_by_label("Contents of /home/user/hello.txt")).to_have_text(
                "hello from the files tab\n")
            expect(page.get_by_role("navigation", name="Path")).to_contain_text("hello.txt")
            accessible(page)
            snapshot(page, "sandbox-files-view")
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
