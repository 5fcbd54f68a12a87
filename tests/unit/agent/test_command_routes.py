"""The agent's command extensions over HTTP: log offsets, NDJSON streams, stdin — and the
control plane's agent client relaying them (fake runtime, no root)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from qbox.core.errors import ConflictError, ProcessNotFoundError, SandboxNotFoundError
from qbox.protocol.processes import CommandStart, ExecRequest, LogOffsets, StdinWrite
from qbox.server.agent_client import AgentClient, AgentEndpoint
from tests.unit.agent.conftest import SECRET, AgentUnderTest
from tests.unit.agent.test_app import _create

NDJSON = "application/x-ndjson"


def _events(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines()]


async def _finished(agent: AgentUnderTest, sandbox_id: str, pid: int) -> None:
    record = agent.app.state.agent.sandboxes.processes(sandbox_id).get(pid)
    await asyncio.wait_for(record.finished.wait(), 5)


async def _started(agent: AgentUnderTest, sandbox_id: str, script: str, **extra: object) -> int:
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/commands",
                                json={"cmd": "sh", "args": ["-c", script], **extra})
    assert r.status_code == 200, r.text
    pid: int = r.json()["pid"]
    return pid


async def test_logs_from_offsets(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    pid = await _started(agent, sandbox_id, "printf abcdef; printf XYZ >&2")
    await _finished(agent, sandbox_id, pid)
    url = f"/sandboxes/{sandbox_id}/commands/{pid}/logs"
    assert (await agent.client.get(url)).json() == {"stdout": "abcdef", "stderr": "XYZ"}
    assert (await agent.client.get(url, params={"offset": 2})).json() == {
        "stdout": "cdef", "stderr": "Z", "stdoutNext": 6, "stderrNext": 3}
    assert (await agent.client.get(url, params={"stdoutOffset": 6, "stderrOffset": 1})).json() == {
        "stdout": "", "stderr": "YZ", "stdoutNext": 6, "stderrNext": 3}
    r = await agent.client.get(url, params={"offset": -1})
    assert r.status_code == 400


async def test_follow_is_ndjson_ending_with_the_exit(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    pid = await _started(agent, sandbox_id, "echo out; echo err >&2; exit 4")
    r = await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}/logs",
                               params={"follow": "true", "stdoutOffset": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith(NDJSON)
    events = _events(r.content)
    assert {"type": "stdout", "data": "ut\n"} in events
    assert {"type": "stderr", "data": "err\n"} in events
    assert events[-1] == {"type": "exit", "exitCode": 4, "signal": 0, "oomKilled": False}
    r = await agent.client.get(f"/sandboxes/{sandbox_id}/commands/4242/logs?follow=true")
    assert r.status_code == 404 and r.json()["error"]["code"] == "process_not_found"


async def test_exec_streams_with_the_ndjson_accept_header_only(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    body = {"cmd": "sh", "args": ["-c", "cat; echo done >&2"], "stdin": "fed"}
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json=body,
                                headers={"Accept": NDJSON})
    events = _events(r.content)
    assert events[0]["type"] == "started" and isinstance(events[0]["pid"], int)
    assert {"type": "stdout", "data": "fed"} in events
    assert events[-1] == {"type": "exit", "exitCode": 0, "signal": 0, "oomKilled": False,
                          "timedOut": False}
    plain = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json=body)
    assert plain.json() == {"stdout": "fed", "stderr": "done\n", "exitCode": 0, "timedOut": False}
    missing = await agent.client.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": "/no/such"},
                                      headers={"Accept": NDJSON})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "validation_error"


async def test_stdin_round_trip_and_conflicts(agent: AgentUnderTest) -> None:
    sandbox_id = await _create(agent)
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/commands",
                                json={"cmd": "cat", "stdin": True})
    pid = r.json()["pid"]
    url = f"/sandboxes/{sandbox_id}/commands/{pid}/stdin"
    assert (await agent.client.post(url, json={"data": "ping\n"})).status_code == 204
    assert (await agent.client.post(url, json={"data": "pong", "close": True})).status_code == 204
    await _finished(agent, sandbox_id, pid)
    status = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}")).json()
    logs = (await agent.client.get(f"/sandboxes/{sandbox_id}/commands/{pid}/logs")).json()
    assert (status["exitCode"], logs["stdout"]) == (0, "ping\npong")
    ended = await agent.client.post(url, json={"data": "late"})
    assert ended.status_code == 409 and ended.json()["error"]["code"] == "conflict"
    no_pipe = await _started(agent, sandbox_id, "sleep 30")
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/commands/{no_pipe}/stdin",
                                json={"data": "x"})
    assert r.status_code == 409
    await agent.client.delete(f"/sandboxes/{sandbox_id}/commands/{no_pipe}?signal=9")


@pytest.fixture
async def agent_client(agent: AgentUnderTest) -> AgentClient:
    return AgentClient(AgentEndpoint("http://agent", SECRET),
                       transport=httpx.ASGITransport(app=agent.app))


async def _read(lines: Any) -> list[dict[str, Any]]:
    return _events(b"".join([chunk async for chunk in lines]))


async def test_the_agent_client_relays_streams_and_raises_errors_first(
        agent: AgentUnderTest, agent_client: AgentClient) -> None:
    sandbox_id = await _create(agent)
    processes = agent_client.processes
    events = await _read(await processes.exec_stream(
        sandbox_id, ExecRequest(cmd="sh", args=["-c", "echo streamed"])))
    assert [e["type"] for e in events] == ["started", "stdout", "exit"]
    answer = await processes.exec(sandbox_id, ExecRequest(cmd="sh", args=["-c", "echo hi; exit 3"]))
    assert (answer.stdout, answer.exit_code, answer.timed_out, answer.oom_killed) == ("hi\n", 3, False, None)
    started = await processes.start(sandbox_id, CommandStart(cmd="cat", stdin=True))
    await processes.write_stdin(sandbox_id, started.pid, StdinWrite(data="via client", close=True))
    followed = await _read(await processes.follow(sandbox_id, started.pid, LogOffsets()))
    assert followed[0] == {"type": "stdout", "data": "via client"}
    assert followed[-1]["type"] == "exit"
    logs = await processes.logs(sandbox_id, started.pid, LogOffsets(offset=4))
    body = b"".join([chunk async for chunk in logs])
    await logs.close()
    assert json.loads(body) == {
        "stdout": "client", "stderr": "", "stdoutNext": 10, "stderrNext": 4}
    with pytest.raises(ProcessNotFoundError):
        await processes.follow(sandbox_id, 99999, LogOffsets())
    with pytest.raises(SandboxNotFoundError):
        await processes.exec_stream("sb_nonexistent00", ExecRequest(cmd="true"))
    with pytest.raises(ConflictError):
        await processes.write_stdin(sandbox_id, started.pid, StdinWrite(data="x"))
    await agent_client.aclose()
