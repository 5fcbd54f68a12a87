"""The sandbox page's Shell and Code tabs in a real browser, on a real sandbox (crun, tpl_python).

The shell echoes what is typed and follows the window's size; a code cell
draws a matplotlib chart (a PNG) and shows a traceback; a page on another
origin cannot open the shell WebSocket with the user's cookie.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import accessible, snapshot
from tests.qbox_process import QboxUp

# The lines of the terminal that are `stty size` answers ("rows cols").
SIZES = """() => [...document.querySelectorAll(".xterm-rows > div")]
  .map((row) => row.textContent.replace(/\\u00a0/g, " ").trim())
  .filter((text) => /^\\d+ \\d+$/.test(text))"""
ROWS = "() => document.querySelectorAll('.xterm-rows > div').length"

PROBE_PAGE = '<!doctype html><title>elsewhere</title><script src="probe.js" data-target="{target}"></script>\n'
PROBE_JS = """\
// Another site's page trying the shell WebSocket with the browser's cookies.
const ws = new WebSocket(document.currentScript.dataset.target);
window.outcome = [];
ws.onopen = () => window.outcome.push("open");
ws.onerror = () => window.outcome.push("error");
ws.onclose = () => window.outcome.push("close");
"""


@pytest.fixture(scope="module")
def sandbox(qbox_web: QboxUp) -> Iterator[str]:
    with qbox_web.client() as api:
        r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=120",
                     json={"templateId": "tpl_python", "labels": {"name": "shell-and-code"}})
        assert r.status_code == 201, r.text
        sandbox_id = str(r.json()["id"])
        try:
            yield sandbox_id
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")


@pytest.fixture
def elsewhere() -> Iterator[Callable[[str], str]]:
    """Serves a page that opens a WebSocket to a given URL, from another origin (another port)."""
    root = Path(tempfile.mkdtemp(prefix="qbox-elsewhere-"))
    (root / "probe.js").write_text(PROBE_JS)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def page_for(target: str) -> str:
        (root / "index.html").write_text(PROBE_PAGE.format(target=target))
        return f"http://127.0.0.1:{server.server_address[1]}/index.html"

    try:
        yield page_for
    finally:
        server.shutdown()
        server.server_close()


def sizes(page: Page) -> list[str]:
    found: list[str] = page.evaluate(SIZES)
    return found


def test_the_shell_echoes_and_follows_the_window(signed_in: Callable[..., Page], sandbox: str) -> None:
    page = signed_in()
    page.goto(f"/sandboxes/{sandbox}/shell")
    expect(page.locator("#shell-status")).to_have_text("Connected")
    reconnect = page.get_by_role("button", name="Reconnect")
    expect(reconnect).to_be_hidden()
    expect(page.locator("#terminal .xterm-helper-textarea")).to_be_focused()
    terminal = page.locator(".xterm-rows")
    page.keyboard.type("echo hi-$RANDOM")
    page.keyboard.press("Enter")
    expect(terminal).to_contain_text(re.compile(r"hi-\d+"))
    accessible(page)
    snapshot(page, "sandbox-shell")

    page.keyboard.type("stty size")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => ({SIZES})().length === 1")
    before, rows_before = sizes(page)[0], page.evaluate(ROWS)
    assert before.split()[0] == str(rows_before)
    page.set_viewport_size({"width": 760, "height": 560})
    page.wait_for_function(f"() => ({ROWS})() !== {rows_before}")  # the terminal refitted (and said so)
    page.keyboard.type("clear; stty size")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => ({SIZES})().some((size) => size !== {before!r})")
    after = [size for size in sizes(page) if size != before][0]
    rows, cols = (int(n) for n in after.split())
    assert rows == page.evaluate(ROWS) and (rows, cols) != tuple(int(n) for n in before.split())

    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    expect(page.locator("#shell-status")).to_contain_text("The shell ended")
    reconnect.click()
    expect(page.locator("#shell-status")).to_have_text("Connected")
    expect(reconnect).to_be_hidden()
    # The keyboard can leave the terminal: Esc, then Tab.
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    expect(page.locator("#terminal .xterm-helper-textarea")).not_to_be_focused()


def test_code_cells_show_charts_tables_and_tracebacks(signed_in: Callable[..., Page], sandbox: str) -> None:
    page = signed_in()
    page.goto(f"/sandboxes/{sandbox}/code")
    expect(page.locator("#code-context")).to_contain_text("is ready", timeout=60_000)
    first = page.locator(".cell").nth(0)
    expect(first.get_by_label("Cell 1")).to_be_focused()
    page.keyboard.type("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    page.keyboard.press("Shift+Enter")
    image = first.locator(".cell-output img")
    expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,iVBORw0KGgo"), timeout=60_000)
    assert image.evaluate("(img) => img.complete && img.naturalWidth") > 100

    second = page.locator(".cell").nth(1)
    expect(second.get_by_label("Cell 2")).to_be_focused()
    page.keyboard.type("1/0")
    page.keyboard.press("Shift+Enter")
    expect(second.locator(".code-error")).to_contain_text("ZeroDivisionError: division by zero")
    expect(second.locator(".traceback")).to_contain_text("1/0")
    assert "\x1b" not in second.locator(".traceback").inner_text()

    # A table (pandas' HTML) is drawn in a sandboxed frame, under our CSP; its script never runs.
    third = page.locator(".cell").nth(2)
    third.get_by_label("Cell 3").fill(
        "import pandas as pd\nfrom IPython.display import HTML, display\n"
        "display(HTML('<p id=\"x\">static</p><script>document.getElementById(\"x\").textContent = \"ran\"</script>'))\n"
        "pd.DataFrame({'city': ['Oslo', 'Lima'], 'n': [1, 2]})")
    third.get_by_role("button", name="Run").click()
    frames = third.frame_locator("iframe.code-html")
    expect(frames.nth(0).locator("#x")).to_have_text("static")
    expect(frames.nth(1).locator("td", has_text="Lima")).to_be_visible()
    # The state is the tab's: a later cell sees the earlier one's names.
    page.get_by_role("button", name="Add a cell").click()
    fourth = page.locator(".cell").nth(3)
    expect(fourth.get_by_label("Cell 4")).to_be_focused()
    page.keyboard.type("print(plt.__name__)")
    fourth.get_by_role("button", name="Run").click()
    expect(fourth.locator(".code-stdout")).to_have_text("matplotlib.pyplot")
    # A long cell says it is running; Stop interrupts its kernel, which then runs the next cell at once.
    fourth.get_by_label("Cell 4").fill("import time\ntime.sleep(600)")
    fourth.get_by_role("button", name="Run").click()
    expect(fourth.locator(".cell-state")).to_have_text(re.compile(r"Running… [1-9]"))
    expect(fourth).to_have_attribute("aria-busy", "true")
    fourth.get_by_role("button", name="Stop").click()
    expect(fourth.locator(".cell-output")).to_contain_text("Stopped: the cell was interrupted.")
    fourth.get_by_label("Cell 4").fill("print('after')")
    fourth.get_by_role("button", name="Run").click()
    expect(fourth.locator(".code-stdout")).to_have_text("after", timeout=10_000)
    accessible(page)
    snapshot(page, "sandbox-code")


def test_another_origin_cannot_open_the_shell(signed_in: Callable[..., Page], sandbox: str, qbox_web: QboxUp,
                                              elsewhere: Callable[[str], str]) -> None:
    page = signed_in()
    target = f"ws://127.0.0.1:{qbox_web.port}/v1/sandboxes/{sandbox}/shell?cols=80&rows=24"
    # From our own origin the same cookie opens it: only the origin differs below.
    page.goto(f"/sandboxes/{sandbox}")
    opened: Any = page.evaluate("""(target) => new Promise((done) => {
        const ws = new WebSocket(target);
        ws.onopen = () => { ws.close(); done("open"); };
        ws.onclose = () => done("closed");
    })""", target)
    assert opened == "open"
    probe = page.context.new_page()
    probe.goto(elsewhere(target))
    probe.wait_for_function("() => window.outcome && window.outcome.includes('close')")
    assert probe.evaluate("window.outcome") == ["error", "close"]
