"""The sandbox page's Shell and Code tabs over the real control plane and agent.

The harness's kernels are the agent tests' fake kernel host (a line language:
``print T``, ``result T``, ``raise N: V``, ``incr``/``get``), so a cell's state,
its escaping and who may run it are checked end to end without Jupyter.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from sqlalchemy import update

from qbox.server.db.tables import Template
from qbox.server.web.render import environment
from qbox.server.web.sandbox_terminal import cell_of, strip_ansi
from tests.unit.server.helpers import db_session
from tests.unit.server.test_audit import entries
from tests.unit.web.helpers import ORIGIN, WebClient, text_of


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@pytest.fixture
def sandbox(web_member: WebClient) -> str:
    r = web_member.api("POST", "/v1/sandboxes?wait=true&waitTimeoutSec=5", json={"templateId": "tpl_python"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def new_context(client: WebClient, sandbox: str) -> str:
    r = client.post(f"/sandboxes/{sandbox}/code/contexts", json={"language": "python"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def run(client: WebClient, sandbox: str, code: str, context: str, **kw: Any) -> Any:
    return client.post(f"/sandboxes/{sandbox}/code/run", json={"code": code, "contextId": context}, **kw)


def counter(client: WebClient, sandbox: str, context: str) -> str:
    r = run(client, sandbox, "get", context)
    assert r.status_code == 200, r.text
    return text_of(r.text).split(" Ran in")[0]


def test_the_owner_sees_the_shell_tab(web_member: WebClient, sandbox: str) -> None:
    r = web_member.get(f"/sandboxes/{sandbox}/shell")
    assert r.status_code == 200
    assert f'data-sandbox-id="{sandbox}"' in r.text and 'id="terminal"' in r.text
    for asset in ("vendor/xterm.js", "vendor/addon-fit.js", "vendor/xterm.css", "shell.js"):
        assert re.search(rf'/assets/[0-9a-f]+/{re.escape(asset)}"', r.text), asset
    assert 'aria-current="page">Shell<' in r.text
    assert "<script>" not in r.text  # nothing inline: the CSP forbids it


def test_the_owner_sees_the_code_tab_with_the_sandboxes_contexts(web_member: WebClient, sandbox: str) -> None:
    context = new_context(web_member, sandbox)
    r = web_member.get(f"/sandboxes/{sandbox}/code")
    assert r.status_code == 200
    assert f'data-sandbox-id="{sandbox}"' in r.text and "code.js" in r.text
    # The ids alive in the sandbox, so a reloaded tab keeps its own context.
    assert f"&#34;{context}&#34;" in r.text
    assert 'id="cell-template"' in r.text and 'aria-current="page">Code<' in r.text


def test_cells_run_in_the_tabs_context_and_keep_its_state(harness: Any, web_member: WebClient,
                                                          sandbox: str) -> None:
    context = new_context(web_member, sandbox)
    r = run(web_member, sandbox, "incr\nincr\nprint two\neprint careful\nresult done", context)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert '<pre class="code-stdout">two\n</pre>' in r.text
    assert '<pre class="code-stderr" aria-label="Standard error">careful\n</pre>' in r.text
    assert '<div class="code-value">' in r.text and "done" in r.text
    assert counter(web_member, sandbox, context) == "2"
    other = new_context(web_member, sandbox)  # another tab: its own kernel
    assert counter(web_member, sandbox, other) == "0"
    r = run(web_member, sandbox, "raise ZeroDivisionError: division by zero", context)
    assert r.status_code == 200
    assert "<strong>ZeroDivisionError</strong>: division by zero" in r.text
    assert '<pre class="traceback">Traceback: ZeroDivisionError</pre>' in r.text
    # Audited under the API's actions, as the member.
    actions = {(e["action"], e["actorEmail"], e["targetId"], e["outcome"]) for e in entries(harness)
               if e["action"] in ("code.execute", "code.context.create")}
    assert {("code.context.create", "alice@example.com", sandbox, 201),
            ("code.execute", "alice@example.com", sandbox, 200)} <= actions


def test_the_kernels_markup_never_reaches_our_page(web_member: WebClient, sandbox: str) -> None:
    context = new_context(web_member, sandbox)
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    r = run(web_member, sandbox, f"print {evil}\ndisplay {evil}\nresult {evil}\nraise {evil}: {evil}", context)
    assert r.status_code == 200, r.text
    assert "<script" not in r.text.lower() and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    # Printed, displayed, the value, and the error's name, value and traceback: all as text.
    assert r.text.count("&lt;script&gt;") == 6


def test_html_results_go_into_a_sandboxed_frame_and_images_into_data_urls() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    cell = cell_of({
        "outputs": [{"stream": "stdout", "text": "a"}, {"stream": "stdout", "text": "b\n"},
                    {"display": {"image/png": b64(png), "text/plain": b64("<Figure>")}},
                    {"display": {"text/html": b64('<table><tr><td>1</td></tr></table><script>top.x=1</script>"'),
                                 "text/plain": b64("  0\n0 1")}}],
        "result": {"application/json": b64('{"a": [1, 2]}')},
        "error": {"name": "ValueError", "value": "\x1b[31mbad\x1b[0m",
                  "traceback": ["\x1b[0;31mValueError\x1b[0m Traceback", "\x1b[1;32m----> 1\x1b[0m raise"]},
        "executionMs": 1500, "timedOut": True,
    })
    html = environment.get_template("sandbox/_code_result.html").render(cell=cell)
    assert '<pre class="code-stdout">ab\n</pre>' in html  # one block per run of a stream
    assert f'src="data:image/png;base64,{b64(png)}"' in html
    frame = re.search(r'<iframe class="code-html" sandbox="" srcdoc="([^"]*)"', html)
    assert frame is not None, html
    assert "<script" not in html and "&lt;script&gt;top.x=1&lt;/script&gt;&#34;" in frame.group(1)
    assert '"a": [\n    1,' in html.replace("&#34;", '"')
    assert "\x1b" not in html and "ValueError Traceback\n----&gt; 1 raise" in html
    assert "Timed out</strong> after 1.5 s." in html


def test_bundles_that_are_not_base64_or_empty() -> None:
    assert strip_ansi("\x1b]0;title\x07\x1b[1mbold\x1b[0m") == "bold"
    cell = cell_of({"outputs": [{"display": {"image/png": "not base64!"}}], "result": {"text/plain": "plain?"},
                    "error": None, "executionMs": 0, "timedOut": False})
    assert cell["outputs"] == [] and cell["result"].text == "plain?"
    html = environment.get_template("sandbox/_code_result.html").render(
        cell=cell_of({"outputs": [], "result": None, "error": None, "executionMs": 3, "timedOut": False}))
    assert "no output" in text_of(html)


def test_a_stranger_gets_the_apis_404_on_every_route_and_runs_nothing(
        web_member: WebClient, stranger: WebClient, sandbox: str) -> None:
    context = new_context(web_member, sandbox)
    api = stranger.api("GET", f"/v1/sandboxes/{sandbox}")
    assert api.status_code == 404
    for tab in ("shell", "code"):
        r = stranger.get(f"/sandboxes/{sandbox}/{tab}")
        assert r.status_code == 404 and "Not found" in r.text, tab
        assert sandbox not in text_of(r.text).replace(api.json()["error"]["message"], "")
    r = stranger.post(f"/sandboxes/{sandbox}/code/contexts", json={"language": "python"})
    assert r.status_code == 404 and "Not found" in text_of(r.text)
    assert run(stranger, sandbox, "incr", context).status_code == 404
    assert run(stranger, sandbox, "incr", context, htmx=False).status_code == 404
    assert counter(web_member, sandbox, context) == "0"
    listed = web_member.api("GET", f"/v1/sandboxes/{sandbox}/code-contexts").json()["contexts"]
    assert [c["id"] for c in listed if not c["isDefault"]] == [context]
    # A bad id is the API's 404 too.
    assert stranger.get("/sandboxes/not-an-id!/shell").status_code == 404


def test_runs_without_the_token_or_from_another_origin_are_refused(web_member: WebClient, sandbox: str) -> None:
    context = new_context(web_member, sandbox)
    client, path = web_member.client, f"/sandboxes/{sandbox}/code/run"
    body = {"code": "incr", "contextId": context}
    refused = [
        client.post(path, json=body, headers={"Origin": ORIGIN}),
        client.post(path, json=body, headers={"Origin": ORIGIN, "X-CSRF-Token": "wrong"}),
        client.post(path, json=body, headers={"Origin": "http://evil.example", "X-CSRF-Token": web_member.csrf}),
        client.post(path, json=body, headers={"X-CSRF-Token": web_member.csrf}),
        client.post(f"/sandboxes/{sandbox}/code/contexts", json={"language": "python"},
                    headers={"Origin": "http://evil.example", "X-CSRF-Token": web_member.csrf}),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert all("cross-site request refused" in text_of(r.text) for r in refused)
    assert counter(web_member, sandbox, context) == "0"


def test_bad_runs_read_as_messages(web_member: WebClient, sandbox: str) -> None:
    r = run(web_member, sandbox, "get", "ctx_gone")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "{" not in text_of(r.text)
    r = web_member.post(f"/sandboxes/{sandbox}/code/run", json={"code": 1})
    assert r.status_code == 400 and "code" in text_of(r.text)
    r = web_member.post(f"/sandboxes/{sandbox}/code/run", content=b"x" * (2 * 1024 * 1024),
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_an_ended_sandbox_says_so(web_member: WebClient, sandbox: str) -> None:
    assert web_member.api("DELETE", f"/v1/sandboxes/{sandbox}").status_code == 204
    for tab in ("shell", "code"):
        r = web_member.get(f"/sandboxes/{sandbox}/{tab}")
        assert r.status_code == 200, tab
        assert "This sandbox has ended" in text_of(r.text) and 'id="terminal"' not in r.text
        assert "shell.js" not in r.text and "code.js" not in r.text


def test_a_template_without_kernels_says_so_instead_of_cells(harness: Any, web_member: WebClient,
                                                              sandbox: str) -> None:
    with db_session(harness.settings.data_dir) as session:
        session.execute(update(Template).values(services=[]))
        session.commit()
    r = web_member.get(f"/sandboxes/{sandbox}/code")
    assert r.status_code == 200
    assert "The code interpreter is not available" in text_of(r.text) and "no code interpreter" in r.text
    assert 'id="notebook"' not in r.text and "code.js" not in r.text
    r = web_member.post(f"/sandboxes/{sandbox}/code/contexts", json={"language": "python"})
    assert r.status_code == 422 and "no code interpreter" in text_of(r.text)
