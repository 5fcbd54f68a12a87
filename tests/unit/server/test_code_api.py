"""The code interpreter through the control plane, over the real agent and the agent tests' fake kernel
host (tests/unit/agent/fake_kernel_host.py: a line language, e.g. ``incr``/``get``/``print T``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import update

from qbox.server.db.tables import Template
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key, db_session
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn


@pytest.fixture
def sb(harness: Harness) -> str:
    return str(spawn(harness)["id"])


def run(h: Harness, sb: str, body: dict[str, Any]) -> dict[str, Any]:
    r = h.client.post(f"/v1/sandboxes/{sb}/code-execute", json=body, headers=h.auth())
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    frames = [f for f in text.split("\n\n") if f.strip() and not f.startswith(":")]
    out = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_templates_and_sandboxes_advertise_the_service(harness: Harness, sb: str) -> None:
    template = harness.client.get("/v1/templates/tpl_python", headers=harness.auth()).json()
    assert template["services"] == [{"name": "code-interpreter", "type": "code-interpreter",
                                     "version": "jupyter:python"}]
    listed = harness.client.get("/v1/templates?service=code-interpreter", headers=harness.auth()).json()
    assert [t["id"] for t in listed] == ["tpl_python"]
    sandbox = harness.client.get(f"/v1/sandboxes/{sb}", headers=harness.auth()).json()
    assert sandbox["services"][0]["type"] == "code-interpreter"


def test_unary_execution_keeps_state_and_base64s_every_mime(harness: Harness, sb: str) -> None:
    first = run(harness, sb, {"code": "incr\n" * 41 + "print hello", "language": "python"})
    assert first["error"] is None and first["result"] is None and first["timedOut"] is False
    assert first["outputs"] == [{"stream": "stdout", "text": "hello\n"}]
    assert first["contextId"].startswith("ctx_") and first["language"] == "python"
    second = run(harness, sb, {"code": "incr\nget"})
    assert second["contextId"] == first["contextId"]
    assert base64.b64decode(second["result"]["text/plain"]) == b"42"
    assert set(second) == {"contextId", "language", "outputs", "result", "error", "executionMs",
                           "timedOut"}


def test_code_errors_are_200_with_the_error(harness: Harness, sb: str) -> None:
    body = run(harness, sb, {"code": "raise ZeroDivisionError: division by zero"})
    assert body["error"]["name"] == "ZeroDivisionError" and body["error"]["traceback"]
    assert body["result"] is None


def test_stream_is_sse_and_ends_with_complete(harness: Harness, sb: str) -> None:
    with harness.client.stream("POST", f"/v1/sandboxes/{sb}/code-execute",
                               json={"code": "print a\nresult 42", "stream": True},
                               headers={**harness.auth(), "Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = sse_events(text)
    assert [kind for kind, _ in events] == ["started", "output", "result", "complete"]
    assert all(data["kind"] == kind for kind, data in events)
    assert events[1][1]["output"] == {"stream": "stdout", "text": "a\n"}
    assert base64.b64decode(events[2][1]["result"]["text/plain"]) == b"42"


def test_a_stream_cut_short_still_ends_with_error_and_complete(harness: Harness, sb: str) -> None:
    harness.agent.faults.cut_after_first_line.add("/code/execute")  # answers break off
    with harness.client.stream("POST", f"/v1/sandboxes/{sb}/code-execute",
                               json={"code": "1", "stream": True},
                               headers={**harness.auth(), "Accept": "text/event-stream"}) as r:
        events = sse_events(r.read().decode())
    assert [kind for kind, _ in events][-2:] == ["error", "complete"]
    unary = run(harness, sb, {"code": "2"})
    assert unary["error"]["name"] == "InterpreterError"


def test_contexts_create_list_restart_delete(harness: Harness, sb: str) -> None:
    c, auth = harness.client, harness.auth()
    r = c.post(f"/v1/sandboxes/{sb}/code-contexts", json={"language": "python", "cwd": "/tmp"}, headers=auth)
    assert r.status_code == 201
    ctx = r.json()
    assert ctx["language"] == "python" and ctx["cwd"] == "/tmp" and ctx["isDefault"] is False
    run(harness, sb, {"code": "incr\n" * 5, "contextId": ctx["id"]})
    assert base64.b64decode(run(harness, sb, {"code": "get", "contextId": ctx["id"]})["result"]["text/plain"]) == b"5"
    listed = c.get(f"/v1/sandboxes/{sb}/code-contexts", headers=auth).json()
    # Besides the default context (the agent warms it up at boot), the one made here.
    assert [x["id"] for x in listed["contexts"] if not x["isDefault"]] == [ctx["id"]]
    assert sum(x["isDefault"] for x in listed["contexts"]) <= 1
    r = c.post(f"/v1/sandboxes/{sb}/code-contexts/{ctx['id']}/restart", headers=auth)  # no body
    assert r.status_code == 200 and r.json()["id"] == ctx["id"]
    # Its state is gone.
    assert base64.b64decode(run(harness, sb, {"code": "get", "contextId": ctx["id"]})["result"]["text/plain"]) == b"0"
    assert c.delete(f"/v1/sandboxes/{sb}/code-contexts/{ctx['id']}", headers=auth).status_code == 204
    r = c.post(f"/v1/sandboxes/{sb}/code-execute", json={"code": "1", "contextId": ctx["id"]}, headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "context_not_found"


def test_languages(harness: Harness, sb: str) -> None:
    r = harness.client.get(f"/v1/sandboxes/{sb}/code-languages", headers=harness.auth())
    assert r.json() == {"languages": [{"language": "python", "aliases": ["python3", "py"],
                                       "kernelName": "python3", "isDefault": True}]}


def test_errors(harness: Harness, sb: str) -> None:
    c, auth = harness.client, harness.auth()
    url = f"/v1/sandboxes/{sb}/code-execute"
    r = c.post(url, json={"code": "1", "contextId": "ctx_1", "language": "python"}, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_argument"
    r = c.post(url, json={"code": "1", "language": "cobol"}, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "language_not_supported"
    assert r.json()["error"]["details"]["supportedLanguages"] == ["python"]
    for body in ({}, {"code": 1}, {"code": "1", "env": {"1X": "y"}}, {"code": "1", "timeoutSeconds": -1},
                 {"code": "1", "owner": "me"}):
        r = c.post(url, json=body, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", body
    harness.agent.manager.interpreters.ready_wait = 0.3
    starting = spawn(harness, {"envs": {"FAKE_NO_READY": "1"}})["id"]  # its kernel host never gets ready
    r = c.post(f"/v1/sandboxes/{starting}/code-execute", json={"code": "1"}, headers=auth)
    assert r.status_code == 503 and r.json()["error"]["details"]["transient"] is True
    c.delete(f"/v1/sandboxes/{sb}", headers=auth)
    r = c.post(url, json={"code": "1"}, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "sandbox_not_active"


def test_timeout_and_env_reach_the_agent(harness: Harness, sb: str) -> None:
    run(harness, sb, {"code": "1", "timeoutSeconds": 0, "env": {"A": "b"}})
    assert harness.agent.code_bodies[-1]["timeoutSeconds"] == 300  # 0: none given
    assert harness.agent.code_bodies[-1]["env"] == {"A": "b"}
    run(harness, sb, {"code": "1", "timeoutSeconds": 7})
    assert harness.agent.code_bodies[-1]["timeoutSeconds"] == 7


def test_a_template_without_kernels_is_422(harness: Harness, sb: str) -> None:
    with db_session(harness.settings.data_dir) as session:
        session.execute(update(Template).values(services=[]))
        session.commit()
    for method, path in (("POST", "code-execute"), ("GET", "code-contexts"), ("GET", "code-languages")):
        r = harness.client.request(method, f"/v1/sandboxes/{sb}/{path}",
                                   json={"code": "1"} if method == "POST" else None, headers=harness.auth())
        assert r.status_code == 422 and r.json()["error"]["code"] == "code_interpreter_disabled", path


def test_members_see_only_their_own_and_executions_are_audited(harness: Harness, sb: str) -> None:
    _b, bob = add_user_with_key(harness.settings.data_dir)
    r = harness.client.post(f"/v1/sandboxes/{sb}/code-execute", json={"code": "1"}, headers=harness.auth(bob))
    assert r.status_code == 404
    run(harness, sb, {"code": "secret = 'hunter2'"})
    got = [e for e in entries(harness) if e["action"] == "code.execute"]
    assert got and got[0]["targetId"] == sb and "hunter2" not in json.dumps(got)
