"""A code-execute whose client goes away closes its agent call (issue 13, finding 4).

The agent interrupts a cell whose call is closed (tests/unit/agent/test_code_disconnect.py);
here the control plane must close it however its answer ends: an SSE stream left
before its first event (its generator never runs, so no ``finally`` of it could), one
left mid-stream, and a unary answer whose client leaves while the cell runs. The
agent's cell runs for an hour; the test plays the HTTP client by hand (ASGI) and
disconnects, and reads on the agent's wire whether the control plane closed its call.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message

from tests.unit.server.agent_bridge import Call
from tests.unit.server.conftest import Harness
from tests.unit.server.test_sandboxes_api import spawn


def _call(h: Harness, sandbox_id: str, body: dict[str, Any], leave_after: float) -> list[dict[str, Any]]:
    """POST code-execute as a client that disconnects ``leave_after`` seconds after its
    body; the messages the app sent (the app must be done within 10 s of that)."""
    path = f"/v1/sandboxes/{sandbox_id}/code-execute"
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {h.admin_key}".encode())],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {}}
    pending = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.sleep(leave_after)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    async def drive() -> None:
        await asyncio.wait_for(h.client.app(scope, receive, send), 10 + leave_after)

    h.client.portal.call(drive)  # type: ignore[union-attr]
    return sent


ENDLESS = "sleep 3600"  # the fake kernel host's cell that runs for an hour


def executions(h: Harness) -> list[Call]:
    """The control plane's code-execute calls to the agent."""
    return h.agent.requests("POST", r"/sandboxes/[^/]+/code/execute")


@pytest.fixture
def endless(harness: Harness) -> tuple[Harness, str]:
    return harness, str(spawn(harness)["id"])


def test_an_sse_client_leaving_before_the_first_event_closes_the_agent_call(
        endless: tuple[Harness, str]) -> None:
    h, sandbox_id = endless
    sent = _call(h, sandbox_id, {"code": ENDLESS, "stream": True}, leave_after=0)
    assert len(executions(h)) == 1
    assert executions(h)[0].closed, "the agent call outlived its client"
    assert all(m.get("status", 200) == 200 for m in sent)


def test_an_sse_client_leaving_mid_stream_closes_the_agent_call(
        endless: tuple[Harness, str]) -> None:
    h, sandbox_id = endless
    sent = _call(h, sandbox_id, {"code": ENDLESS, "stream": True}, leave_after=0.5)
    assert b"event: started" in b"".join(m.get("body", b"") for m in sent)
    assert executions(h)[0].closed, "the agent call outlived its client"


def test_a_unary_client_leaving_closes_the_agent_call(
        endless: tuple[Harness, str]) -> None:
    h, sandbox_id = endless
    sent = _call(h, sandbox_id, {"code": ENDLESS}, leave_after=0.2)
    assert sent[0]["status"] == 499  # nobody reads it
    assert executions(h)[0].closed, "the agent call outlived its client"


def test_an_execution_that_completes_closes_its_agent_call_too(harness: Harness) -> None:
    sandbox_id = str(spawn(harness)["id"])
    for stream in (False, True):
        r = harness.client.post(f"/v1/sandboxes/{sandbox_id}/code-execute",
                                json={"code": "result 2", "stream": stream}, headers=harness.auth())
        assert r.status_code == 200 and "Mg==" in r.text
    assert [call.closed for call in executions(harness)] == [True, True]
