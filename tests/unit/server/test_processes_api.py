"""Exec and commands through the control plane (the agent's fake runtime runs them on the test host)."""

from __future__ import annotations

import json

from tests.unit.server.conftest import Harness
from tests.unit.server.test_sandboxes_api import spawn


def test_exec_returns_outputs_and_exit_code(harness: Harness) -> None:
    sb = spawn(harness)
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec",
                            json={"cmd": "sh", "args": ["-c", "echo out; echo err >&2; exit 3"]},
                            headers=harness.auth())
    assert r.status_code == 200
    assert r.json() == {"stdout": "out\n", "stderr": "err\n", "exitCode": 3, "timedOut": False}


def test_exec_stdin_and_timeout(harness: Harness) -> None:
    sb = spawn(harness)
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec",
                            json={"cmd": "cat", "stdin": "hello"}, headers=harness.auth())
    assert r.json()["stdout"] == "hello"
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec",
                            json={"cmd": "sleep", "args": ["5"], "timeoutSeconds": 0.2},
                            headers=harness.auth())
    assert r.status_code == 200 and r.json()["timedOut"] is True


def test_exec_validation(harness: Harness) -> None:
    sb = spawn(harness)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    for body, field in [({}, "cmd"), ({"cmd": ""}, "cmd"), ({"cmd": "a", "args": ["x\x00y"]}, "args"),
                        ({"cmd": "a", "timeoutSeconds": 0}, "timeoutSeconds"),
                        ({"cmd": "a", "env": {"1BAD": "x"}}, "env")]:
        r = harness.client.post(url, json=body, headers=harness.auth())
        assert r.status_code == 400, body
        assert field in r.json()["error"]["details"]["fieldErrors"], body


def test_exec_on_ended_sandbox_is_sandbox_not_active(harness: Harness) -> None:
    sb = spawn(harness)
    harness.client.delete(f"/v1/sandboxes/{sb['id']}", headers=harness.auth())
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "true"},
                            headers=harness.auth())
    assert r.status_code == 409
    assert r.json()["error"]["details"] == {"sandboxId": sb["id"], "currentState": "killed"}


def test_sandbox_gone_from_host_is_marked_lost(harness: Harness) -> None:
    sb = spawn(harness)
    harness.agent.forget(sb["id"])
    r = harness.client.post(f"/v1/sandboxes/{sb['id']}/exec", json={"cmd": "true"},
                            headers=harness.auth())
    assert r.status_code == 409
    assert r.json()["error"]["details"]["currentState"] == "failed"
    got = harness.client.get(f"/v1/sandboxes/{sb['id']}", headers=harness.auth()).json()
    assert got["status"] == "failed" and "lost" in got["endReason"]


def test_commands_flow(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    base = f"/v1/sandboxes/{sb['id']}/commands"
    r = c.post(base, json={"cmd": "/bin/sh", "args": ["-c", "echo hi; echo no >&2; exit 2"]},
               headers=auth)
    assert r.status_code == 201
    started = r.json()
    assert isinstance(started["pid"], int) and started["startedAt"].endswith("Z")
    pid = started["pid"]
    status = c.get(f"{base}/{pid}", headers=auth).json()
    assert status["alive"] is False and status["exitCode"] == 2 and status["signal"] == 0
    assert c.get(f"{base}/{pid}/logs", headers=auth).json() == {"stdout": "hi\n", "stderr": "no\n"}
    listing = c.get(base, headers=auth).json()
    assert [p["pid"] for p in listing] == [pid]
    assert listing[0]["command"] == ["/bin/sh", "-c", "echo hi; echo no >&2; exit 2"]
    assert c.delete(f"{base}/{pid}?signal=9", headers=auth).status_code == 204
    r = c.get(f"{base}/99999", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "process_not_found"
    r = c.get(f"{base}/notanumber", headers=auth)  # not a pid's format: names no process
    assert r.status_code == 404 and r.json()["error"]["code"] == "process_not_found"
    r = c.delete(f"{base}/{pid}?signal=99", headers=auth)
    assert r.status_code == 400


# --- qbox extensions: offsets, NDJSON streams, stdin -----------------------------------------

NDJSON = "application/x-ndjson"


def _events(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines()]


def test_logs_offsets_and_follow(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    base = f"/v1/sandboxes/{sb['id']}/commands"
    pid = c.post(base, json={"cmd": "/bin/sh", "args": ["-c", "printf abc; printf de >&2; exit 5"]},
                 headers=auth).json()["pid"]
    r = c.get(f"{base}/{pid}/logs?stdoutOffset=1&stderrOffset=2", headers=auth)
    assert r.json() == {"stdout": "bc", "stderr": "", "stdoutNext": 3, "stderrNext": 2}
    assert c.get(f"{base}/{pid}/logs?offset=-1", headers=auth).status_code == 400
    r = c.get(f"{base}/{pid}/logs?follow=true&offset=1", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith(NDJSON)
    assert _events(r.text) == [{"type": "stdout", "data": "bc"}, {"type": "stderr", "data": "e"},
                               {"type": "exit", "exitCode": 5, "signal": 0, "oomKilled": False}]
    # An error before the stream starts is the ordinary JSON envelope.
    r = c.get(f"{base}/99999/logs?follow=true", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "process_not_found"


def test_exec_streams_only_when_asked(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    body = {"cmd": "sh", "args": ["-c", "echo hi"]}
    r = c.post(url, json=body, headers={**auth, "Accept": NDJSON})
    assert r.headers["content-type"].startswith(NDJSON)
    events = _events(r.text)
    assert [e["type"] for e in events] == ["started", "stdout", "exit"]
    assert events[-1]["timedOut"] is False and events[-1]["exitCode"] == 0
    assert c.post(url, json=body, headers=auth).json()["stdout"] == "hi\n"
    c.delete(f"/v1/sandboxes/{sb['id']}", headers=auth)
    r = c.post(url, json=body, headers={**auth, "Accept": NDJSON})
    assert r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active"


def test_stdin_for_background_commands(harness: Harness) -> None:
    c, auth = harness.client, harness.auth()
    sb = spawn(harness)
    base = f"/v1/sandboxes/{sb['id']}/commands"
    pid = c.post(base, json={"cmd": "cat", "stdin": True}, headers=auth).json()["pid"]
    assert c.post(f"{base}/{pid}/stdin", json={"data": "one "}, headers=auth).status_code == 204
    r = c.post(f"{base}/{pid}/stdin", json={"data": "two", "close": True}, headers=auth)
    assert r.status_code == 204
    assert c.get(f"{base}/{pid}/logs", headers=auth).json()["stdout"] == "one two"
    r = c.post(f"{base}/{pid}/stdin", json={"data": "late"}, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = c.post(f"{base}/{pid}/stdin", json={"data": 5}, headers=auth)
    assert r.status_code == 400
    r = c.post(base, json={"cmd": "cat", "stdin": "not a flag"}, headers=auth)
    assert r.status_code == 400
    audited = c.get("/v1/audit", params={"limit": 50}, headers=auth).json()["data"]
    stdin_entries = [(e["outcome"], e["targetId"]) for e in audited if e["action"] == "command.stdin"]
    assert sorted(stdin_entries) == [(204, sb["id"]), (204, sb["id"]), (400, sb["id"]),
                                     (409, sb["id"])]
