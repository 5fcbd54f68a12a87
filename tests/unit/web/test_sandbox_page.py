"""A sandbox's page: its Overview, Logs and Processes tabs, over the real control plane and agent."""

from __future__ import annotations

import html
import re
import time
from typing import Any

from tests.unit.server.conftest import Harness
from tests.unit.web.helpers import ORIGIN, WebClient, text_of


def spawn(user: WebClient, **body: Any) -> dict[str, Any]:
    r = user.api("POST", "/v1/sandboxes?wait=true&waitTimeoutSec=5", json={"templateId": "tpl_python", **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def start(user: WebClient, sandbox_id: str, script: str) -> int:
    r = user.api("POST", f"/v1/sandboxes/{sandbox_id}/commands", json={"cmd": "sh", "args": ["-c", script]})
    assert r.status_code == 201, r.text
    return int(r.json()["pid"])


def command(user: WebClient, sandbox_id: str, pid: int) -> dict[str, Any]:
    r = user.api("GET", f"/v1/sandboxes/{sandbox_id}/commands/{pid}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def until(condition: Any, seconds: float = 10) -> None:
    """Wait for something the agent does on its own time (a process ending, output arriving)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def is_not_found_page(r: Any) -> bool:
    return (r.status_code == 404 and r.headers["content-type"].startswith("text/html")
            and "Not found" in text_of(r.text) and not r.text.lstrip().startswith("{"))


def test_the_owner_sees_the_overview_with_limits_deadline_and_events(web_member: WebClient) -> None:
    sb = spawn(web_member, labels={"name": "demo", "team": "ml"}, vcpus=2, memoryMb=1024, timeoutSeconds=600)
    r = web_member.get(f"/sandboxes/{sb['id']}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = text_of(r.text)
    for shown in (sb["id"], "tpl_python", "(demo)", "team=ml", "local", "running", "1.0 GiB",
                  "Internet allowed", "600 s", "spawn requested from template tpl_python"):
        assert shown in page, shown
    assert f'<time datetime="{sb["expiresAt"]}" data-countdown' in r.text
    # The status part polls itself while the sandbox runs; its fragment updates the header's badge too.
    assert f'hx-get="/sandboxes/{sb["id"]}/overview/status" hx-trigger="every 2s"' in r.text
    fragment = web_member.get(f"/sandboxes/{sb['id']}/overview/status", htmx=True)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'id="sandbox-badge" hx-swap-oob="true"' in fragment.text and "data-countdown" in fragment.text


def test_an_ended_sandbox_shows_why_and_stops_polling(web_member: WebClient) -> None:
    sb = spawn(web_member)
    assert web_member.api("DELETE", f"/v1/sandboxes/{sb['id']}").status_code == 204
    ended = web_member.api("GET", f"/v1/sandboxes/{sb['id']}").json()
    for path in (f"/sandboxes/{sb['id']}", f"/sandboxes/{sb['id']}/logs", f"/sandboxes/{sb['id']}/processes"):
        r = web_member.get(path)
        assert r.status_code == 200, path
        assert "hx-trigger" not in r.text, path  # nothing left to wait for
    overview = text_of(web_member.get(f"/sandboxes/{sb['id']}").text)
    assert "Why it ended" in overview and ended["endReason"] in overview and "killed" in overview
    assert "data-countdown" not in web_member.get(f"/sandboxes/{sb['id']}").text
    assert "The sandbox has ended; this log is complete." in text_of(web_member.get(f"/sandboxes/{sb['id']}/logs").text)
    assert "The sandbox is killed: it runs no processes." in text_of(
        web_member.get(f"/sandboxes/{sb['id']}/processes").text)
    # An output panel still polling is told the processes are gone, and stops.
    panel = web_member.get(f"/sandboxes/{sb['id']}/processes/1/output", htmx=True)
    assert panel.status_code == 200 and "hx-trigger" not in panel.text
    assert "its processes and their output are gone" in text_of(panel.text)


def test_the_logs_tab_shows_the_event_log_and_polls_it(web_member: WebClient) -> None:
    sb = spawn(web_member)
    events = web_member.api("GET", f"/v1/sandboxes/{sb['id']}/logs").json()
    r = web_member.get(f"/sandboxes/{sb['id']}/logs")
    assert r.status_code == 200
    page = text_of(r.text)
    assert events and all(event["message"] in page for event in events)
    assert f'hx-get="/sandboxes/{sb["id"]}/logs/lines" hx-trigger="every 2s"' in r.text
    lines = web_member.get(f"/sandboxes/{sb['id']}/logs/lines", htmx=True)
    assert lines.status_code == 200 and "<html" not in lines.text and events[-1]["message"] in text_of(lines.text)
    assert "Live: refreshed every 2 seconds." in text_of(lines.text)


def test_the_processes_tab_lists_commands_and_shows_output(web_member: WebClient) -> None:
    sb = spawn(web_member)
    done = start(web_member, sb["id"], "echo hello-out; echo oops >&2; exit 3")
    running = start(web_member, sb["id"], "echo hello-proc; sleep 300")
    until(lambda: not command(web_member, sb["id"], done)["alive"])
    r = web_member.get(f"/sandboxes/{sb['id']}/processes")
    assert r.status_code == 200
    page = html.unescape(text_of(r.text))
    assert "sh -c echo hello-out; echo oops >&2; exit 3" in page and "sh -c echo hello-proc; sleep 300" in page
    assert page.index(str(running)) < page.index(str(done))  # newest first
    assert f'id="kill-{running}"' in r.text and f'id="kill-{done}"' not in r.text  # only the living can be killed
    assert f'hx-get="/sandboxes/{sb["id"]}/processes/list" hx-trigger="every 2s, processes-changed from:body"' in r.text
    output = web_member.get(f"/sandboxes/{sb['id']}/processes/{done}/output", htmx=True)
    assert output.status_code == 200 and "<html" not in output.text
    shown = text_of(output.text)
    assert "hello-out" in shown and "oops" in shown and "exit code 3" in shown
    assert "hx-trigger" not in output.text  # an ended command's output no longer changes
    # A plain link opens the tab with the output panel.
    until(lambda: "hello-proc" in web_member.get(f"/sandboxes/{sb['id']}/processes/{running}/output").text)
    opened = web_member.get(f"/sandboxes/{sb['id']}/processes/{running}/output")
    assert "<html" in opened.text and "Output of process" in text_of(opened.text)
    assert f'hx-get="/sandboxes/{sb["id"]}/processes/{running}/output" hx-trigger="every 2s"' in opened.text


def test_long_output_shows_its_last_part(web_member: WebClient) -> None:
    sb = spawn(web_member)
    pid = start(web_member, sb["id"], "head -c 100000 /dev/zero | tr '\\0' x; echo the-end")
    until(lambda: not command(web_member, sb["id"], pid)["alive"])
    shown = text_of(web_member.get(f"/sandboxes/{sb['id']}/processes/{pid}/output", htmx=True).text)
    assert "Only the last 65536 characters of each stream are shown." in shown and "the-end" in shown
    # Past what a page reads, it says where to read it instead.
    pid = start(web_member, sb["id"], "head -c 1200000 /dev/zero | tr '\\0' y")
    until(lambda: not command(web_member, sb["id"], pid)["alive"])
    shown = text_of(web_member.get(f"/sandboxes/{sb['id']}/processes/{pid}/output", htmx=True).text)
    assert "The output is larger than 1.0 MiB" in shown and f"/commands/{pid}/logs?offset=N" in shown
    assert "yyyy" not in shown


def test_kill_from_the_page_ends_the_process_and_is_audited(harness: Harness, web_member: WebClient) -> None:
    sb = spawn(web_member)
    pid = start(web_member, sb["id"], "sleep 300")
    r = web_member.post(f"/sandboxes/{sb['id']}/processes/{pid}/kill", data={"signal": "9"})
    assert r.status_code == 200 and 'id="processes-list"' in r.text
    until(lambda: not command(web_member, sb["id"], pid)["alive"])
    assert command(web_member, sb["id"], pid)["signal"] == 9
    entries = harness.client.get("/v1/audit", params={"action": "command.kill"}, headers=harness.auth()).json()["data"]
    assert [(e["actorId"], e["detail"], e["outcome"]) for e in entries] == [(web_member.user_id, f"pid={pid} signal=9",
                                                                              200)]
    # A plain form (no htmx) comes back to the tab.
    other = start(web_member, sb["id"], "sleep 300")
    r = web_member.post(f"/sandboxes/{sb['id']}/processes/{other}/kill", data={"csrf_token": web_member.csrf},
                        htmx=False, headers={"X-CSRF-Token": ""})
    assert (r.status_code, r.headers["location"]) == (303, f"/sandboxes/{sb['id']}/processes")
    until(lambda: not command(web_member, sb["id"], other)["alive"])
    assert command(web_member, sb["id"], other)["signal"] == 15
    entries = harness.client.get("/v1/audit", params={"action": "command.kill"}, headers=harness.auth()).json()["data"]
    assert [(e["detail"], e["outcome"]) for e in entries][0] == (f"pid={other} signal=15", 303)
    assert len(entries) == 2
    r = web_member.post(f"/sandboxes/{sb['id']}/processes/{other}/kill", data={"signal": "2"})
    assert r.status_code == 400 and "signal" in text_of(r.text)


def test_a_kill_without_the_token_or_from_another_site_is_refused(web_member: WebClient) -> None:
    sb = spawn(web_member)
    pid = start(web_member, sb["id"], "sleep 300")
    url = f"/sandboxes/{sb['id']}/processes/{pid}/kill"
    r = web_member.client.post(url, data={"signal": "9"}, headers={"Origin": ORIGIN}, follow_redirects=False)
    assert r.status_code == 403 and "cross-site request refused" in text_of(r.text)
    r = web_member.client.post(url, data={"signal": "9", "csrf_token": web_member.csrf},
                               headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403
    r = web_member.client.post(f"/sandboxes/{sb['id']}/processes", data={"command": "touch /tmp/x"},
                               headers={"Origin": ORIGIN}, follow_redirects=False)
    assert r.status_code == 403
    assert command(web_member, sb["id"], pid)["alive"]
    assert len(web_member.api("GET", f"/v1/sandboxes/{sb['id']}/commands").json()) == 1


def test_run_a_command_from_the_page(harness: Harness, web_member: WebClient) -> None:
    sb = spawn(web_member)
    r = web_member.post(f"/sandboxes/{sb['id']}/processes", data={"command": "echo hello-run"}, htmx=False)
    assert r.status_code == 303
    location = r.headers["location"]
    pid = int(location.split("/processes/")[1].split("/")[0])
    listed = web_member.api("GET", f"/v1/sandboxes/{sb['id']}/commands").json()
    assert [(c["pid"], c["command"]) for c in listed] == [(pid, ["/bin/sh", "-c", "echo hello-run"])]
    until(lambda: "hello-run" in web_member.get(location).text)
    entries = harness.client.get("/v1/audit", params={"action": "command.start"}, headers=harness.auth()).json()["data"]
    assert [e["detail"] for e in entries] == [f"pid={pid} /bin/sh -c 'echo hello-run'"]
    # Through htmx the answer is the new command's output panel.
    r = web_member.post(f"/sandboxes/{sb['id']}/processes", data={"command": "sleep 300"})
    assert r.status_code == 200 and 'id="process-output"' in r.text and "sleep 300" in text_of(r.text)
    assert r.headers["hx-trigger"] == "processes-changed"
    r = web_member.post(f"/sandboxes/{sb['id']}/processes", data={"command": "   "})
    assert r.status_code == 400 and "type a command to run" in text_of(r.text)
    assert r.headers.get("hx-retarget") == "#alerts"


def test_a_stranger_gets_the_not_found_page_everywhere_and_changes_nothing(
        web_member: WebClient, stranger: WebClient) -> None:
    sb = spawn(web_member)
    pid = start(web_member, sb["id"], "sleep 300")
    base = f"/sandboxes/{sb['id']}"
    for path in (base, f"{base}/overview/status", f"{base}/logs", f"{base}/logs/lines", f"{base}/processes",
                 f"{base}/processes/list", f"{base}/processes/{pid}/output"):
        r = stranger.get(path)
        assert is_not_found_page(r), path
        r = stranger.get(path, htmx=True)
        assert r.status_code == 404 and r.headers.get("hx-retarget") == "#alerts", path
    for signal in ("15", "9"):
        r = stranger.post(f"{base}/processes/{pid}/kill", data={"signal": signal}, htmx=False)
        assert is_not_found_page(r)
    r = stranger.post(f"{base}/processes", data={"command": "touch /tmp/owned"}, htmx=False)
    assert is_not_found_page(r)
    assert command(web_member, sb["id"], pid)["alive"]
    assert [c["pid"] for c in web_member.api("GET", f"/v1/sandboxes/{sb['id']}/commands").json()] == [pid]
    # The owner still sees it all.
    assert web_member.get(f"{base}/processes").status_code == 200


def test_an_admin_sees_a_members_sandbox(web_admin: WebClient, web_member: WebClient) -> None:
    sb = spawn(web_member, labels={"name": "alice-box"})
    pid = start(web_member, sb["id"], "echo from-alice")
    for path in (f"/sandboxes/{sb['id']}", f"/sandboxes/{sb['id']}/logs", f"/sandboxes/{sb['id']}/processes"):
        r = web_admin.get(path)
        assert r.status_code == 200 and "alice-box" in text_of(r.text), path
    until(lambda: "from-alice" in web_admin.get(f"/sandboxes/{sb['id']}/processes/{pid}/output", htmx=True).text)


def test_ids_not_of_their_format_are_not_found_pages(web_member: WebClient) -> None:
    sb = spawn(web_member)
    for path in ("/sandboxes/nope", "/sandboxes/sb_doesnotexist0000/logs", "/sandboxes/x%3By/processes",
                 f"/sandboxes/{sb['id']}/processes/abc/output", f"/sandboxes/{sb['id']}/processes/99999/output"):
        assert is_not_found_page(web_member.get(path)), path
    r = web_member.post(f"/sandboxes/{sb['id']}/processes/abc/kill", data={"signal": "9"}, htmx=False)
    assert is_not_found_page(r)


def test_the_header_kills_the_sandbox_and_comes_back_to_the_tab(web_member: WebClient) -> None:
    sb = spawn(web_member)
    page = web_member.get(f"/sandboxes/{sb['id']}/processes").text
    assert f'action="/sandboxes/{sb["id"]}/kill"' in page
    assert f'name="next" value="/sandboxes/{sb["id"]}/processes"' in page
    r = web_member.post(f"/sandboxes/{sb['id']}/kill", data={"next": f"/sandboxes/{sb['id']}/processes"}, htmx=False)
    assert (r.status_code, r.headers["location"]) == (303, f"/sandboxes/{sb['id']}/processes")
    assert web_member.api("GET", f"/v1/sandboxes/{sb['id']}").json()["status"] == "killed"
    assert f'action="/sandboxes/{sb["id"]}/kill"' not in web_member.get(f"/sandboxes/{sb['id']}").text


def test_a_poll_that_finds_nothing_new_swaps_nothing(web_member: WebClient) -> None:
    sb = spawn(web_member)
    pid = start(web_member, sb["id"], "echo once; sleep 300")
    output = f"/sandboxes/{sb['id']}/processes/{pid}/output"
    until(lambda: "once" in web_member.get(output, htmx=True).text)
    seen = re.search(r'hx-vals=\'\{"seen": "(\w+)"\}\'', web_member.get(output, htmx=True).text)
    assert seen is not None
    r = web_member.get(output, htmx=True, params={"seen": seen.group(1)})
    assert r.status_code == 204 and not r.content
    assert web_member.get(output, htmx=True, params={"seen": "stale"}).status_code == 200
    lines = f"/sandboxes/{sb['id']}/logs/lines"
    seen = re.search(r'hx-vals=\'\{"seen": "(\w+)"\}\'', web_member.get(f"/sandboxes/{sb['id']}/logs").text)
    assert seen is not None
    assert web_member.get(lines, htmx=True, params={"seen": seen.group(1)}).status_code == 204
    web_member.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    r = web_member.get(lines, htmx=True, params={"seen": seen.group(1)})
    assert r.status_code == 200 and "killed by DELETE" in text_of(r.text) and "hx-trigger" not in r.text
