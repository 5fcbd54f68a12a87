"""A code-execute whose client goes away closes its agent call (issue 13, finding 4).

The agent interrupts a cell whose call is closed (tests/unit/agent/test_code_disconnect.py);
here the control plane must close it however its answer ends: an SSE stream left
before its first event (its generator never runs, so no ``finally`` of it could), one
left mid-stream, and a unary answer whose client leaves while the cell runs. The fake
agent's execution never ends; the test plays the HTTP client by hand (ASGI) and
disconnects.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Message

from qbox.server.agent_client import Relayed
from tests.unit.server.conftest import Harness
from tests.unit.server.test_sandboxes_api import spawn


class Endless:
    """An agent execution that says ``started`` (or nothing) and then runs forever."""

    def __init__(self, first_line: bool) -> None:
        self.first_line = first_line
        self.closed = 0
        self.calls = 0

    async def code_execute(self, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        self.calls += 1

        async def lines() -> AsyncIterator[bytes]:
            if self.first_line:
                yield json.dumps({"kind": "started", "contextId": "ctx_x",
                                  "language": "python"}).encode() + b"\n"
            await asyncio.sleep(3600)
            yield b""

        async def close() -> None:
            self.closed += 1
        return Relayed(lines(), close)


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


@pytest.fixture
def endless(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> tuple[Harness, str, Endless]:
    sandbox_id = str(spawn(harness)["id"])
    agent = Endless(first_line=False)
    monkeypatch.setattr(harness.agent, "code_execute", agent.code_execute)
    return harness, sandbox_id, agent


def test_an_sse_client_leaving_before_the_first_event_closes_the_agent_call(
        endless: tuple[Harness, str, Endless]) -> None:
    h, sandbox_id, agent = endless
    sent = _call(h, sandbox_id, {"code": "while True: pass", "stream": True}, leave_after=0)
    assert agent.calls == 1
    assert agent.closed >= 1, "the agent call outlived its client"
    assert all(m.get("status", 200) == 200 for m in sent)


def test_an_sse_client_leaving_mid_stream_closes_the_agent_call(
        endless: tuple[Harness, str, Endless]) -> None:
    h, sandbox_id, agent = endless
    agent.first_line = True
    sent = _call(h, sandbox_id, {"code": "while True: pass", "stream": True}, leave_after=0.5)
    assert b"event: started" in b"".join(m.get("body", b"") for m in sent)
    assert agent.closed >= 1, "the agent call outlived its client"


def test_a_unary_client_leaving_closes_the_agent_call(
        endless: tuple[Harness, str, Endless]) -> None:
    h, sandbox_id, agent = endless
    agent.first_line = True
    sent = _call(h, sandbox_id, {"code": "while True: pass"}, leave_after=0.2)
    assert sent[0]["status"] == 499  # nobody reads it
    assert agent.closed >= 1, "the agent call outlived its client"


def test_an_execution_that_completes_closes_its_agent_call_too(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox_id = str(spawn(harness)["id"])
    closed: list[bool] = []
    real = harness.agent.code_execute

    async def closing(sb: str, body: dict[str, Any]) -> Relayed:
        relayed = await real(sb, body)

        async def close() -> None:
            closed.append(True)
        return Relayed(relayed.chunks, close)
    monkeypatch.setattr(harness.agent, "code_execute", closing)
    for stream in (False, True):
        r = harness.client.post(f"/v1/sandboxes/{sandbox_id}/code-execute",
                                json={"code": "1 + 1", "stream": stream}, headers=harness.auth())
        assert r.status_code == 200 and "Mg==" in r.text
    assert closed == [True, True]
