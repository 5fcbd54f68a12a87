"""A real agent app joins the real control plane with a token and heartbeats: the host is
listed ready with the figures the agent measured, the control plane reaches the agent with
the secret it handed out, and a sandbox placed there gets its deadline on the agent.

The agent runs on its own loop (RunningAgent, fake runtime); its calls to the control plane
go to the harness's app, its data-plane calls from the control plane come back through the
in-process bridge with the secret of the join.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from qbox.agent.joined_host import take_part
from qbox.agent.joining import MembershipEnded
from qbox.core.timefmt import from_wire
from qbox.server.agent_client import AgentClient, AgentEndpoint
from tests.unit.server.agent_bridge import BridgeTransport
from tests.unit.server.agent_host import RunningAgent
from tests.unit.server.conftest import Harness

ADDRESS = "http://10.9.0.7:7001"
SPAWN = "/v1/sandboxes?wait=true&waitTimeoutSec=5"


class ToControlPlane(httpx.AsyncBaseTransport):
    """The agent's calls, answered by the control plane's app (on the TestClient's loop)."""

    def __init__(self, client: TestClient) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        answer = await asyncio.to_thread(
            self._client.request, request.method, request.url.path, content=body,
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"})
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def _eventually(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return result


@pytest.fixture
def token(harness: Harness) -> str:
    r = harness.client.post("/v1/host-tokens", json={"labels": {"rack": "7"}},
                            headers=harness.auth())
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture
def member(harness: Harness, token: str, tmp_path: Path) -> Iterator[RunningAgent]:
    """A second agent that joined with ``token`` and heartbeats every 0.05 s."""
    harness.settings.host_heartbeat_seconds = 0.05
    with RunningAgent(tmp_path / "member", join_url="http://testserver", join_token=token,
                      labels={"zone": "b"}) as agent:
        # The image of the built-in template, so the scheduler may place it there.
        agent.call(agent.store.import_image, "oci:/nonexistent:latest", "python")
        pool = harness.client.app.state.services.ctx.agents  # type: ignore[attr-defined]
        pool.factory = lambda _address, secret: AgentClient(
            AgentEndpoint("http://agent", secret),
            transport=BridgeTransport(agent.app, agent.portal, agent.calls, agent.faults))
        part: concurrent.futures.Future[None] = agent.portal.start_task_soon(
            take_part, agent.app, ADDRESS,
            httpx.AsyncClient(transport=ToControlPlane(harness.client)))
        try:
            yield agent
        finally:
            part.cancel()
            with pytest.raises((concurrent.futures.CancelledError, MembershipEnded)):
                part.result(timeout=10)


def _host_id(agent: RunningAgent) -> str:
    return str(json.loads((agent.settings.data_dir / "host.json").read_text())["hostId"])


def test_a_joined_agent_is_ready_with_its_figures(harness: Harness, member: RunningAgent) -> None:
    host_file = member.settings.data_dir / "host.json"
    _eventually(host_file.exists)
    host_id = _host_id(member)

    def listed() -> dict[str, Any] | None:
        host: dict[str, Any] = harness.client.get(f"/v1/hosts/{host_id}",
                                                  headers=harness.auth()).json()
        return host if host.get("memoryUsedMb") and host.get("lastHeartbeatAt") else None

    host = _eventually(listed)
    assert (host["status"], host["kind"], host["address"]) == ("ready", "joined", ADDRESS)
    assert host["labels"] == {"rack": "7", "zone": "b"}  # the token's and the agent's
    assert host["maxSandboxes"] == 1000 and host["totalVcpus"] == 64
    assert host["hostname"] and host["diskTotalMb"] > 0 and host["cpuPercent"] is not None
    assert "tpl_python" in host["templates"]
    first = host["lastHeartbeatAt"]
    # Heartbeats go on.
    _eventually(lambda: harness.client.get(f"/v1/hosts/{host_id}", headers=harness.auth()
                                           ).json()["lastHeartbeatAt"] != first)
    # The token was used once and is never kept by the agent.
    for path in member.settings.data_dir.rglob("*"):
        assert not path.is_file() or b"qbj_" not in path.read_bytes()


def test_a_sandbox_on_the_joined_host_carries_its_deadline(harness: Harness,
                                                           member: RunningAgent) -> None:
    _eventually((member.settings.data_dir / "host.json").exists)
    host_id = _host_id(member)
    harness.client.post("/v1/hosts/local/drain", headers=harness.auth())

    r = harness.client.post(SPAWN, json={"templateId": "tpl_python", "timeoutSeconds": 600},
                            headers=harness.auth())

    assert r.status_code == 201, r.text
    sandbox = r.json()
    assert sandbox["hostId"] == host_id
    assert member.sandbox_ids() == [sandbox["id"]]
    deadline = member.call(lambda: member.manager.get(sandbox["id"]).deadline_at)
    assert deadline == from_wire(sandbox["expiresAt"])
    # A new timeout reaches the agent (PUT /deadline); 0 lifts the deadline there too.
    r = harness.client.post(f"/v1/sandboxes/{sandbox['id']}/timeout", json={"timeoutSeconds": 0},
                            headers=harness.auth())
    assert r.status_code == 200, r.text
    assert member.call(lambda: member.manager.get(sandbox["id"]).deadline_at) is None
