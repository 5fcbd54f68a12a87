"""Deadlines on the agent: given at create, changed by PUT /deadline, kept across a restart,
and enforced by the agent's own loop with exitReason "timeout"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from qbox.agent.app import create_app
from qbox.agent.deadlines import end_past_deadline, past_deadline
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import Sandbox, SandboxParams, SandboxStatus
from qbox.agent.settings import AgentSettings
from qbox.core.ids import new_sandbox_id
from qbox.core.sandbox_ends import FENCED, TIMED_OUT, describe_end
from qbox.core.timefmt import from_wire, to_wire, utcnow
from qbox.protocol.sandboxes import SandboxDeadline
from qbox.server.agent_client import AgentClient, AgentEndpoint
from tests.unit.agent.conftest import SECRET, AgentUnderTest
from tests.unit.agent.fakes import FakeImageStore

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


async def _create(agent: AgentUnderTest, deadline: datetime | None = None) -> str:
    sandbox_id = new_sandbox_id()
    body: dict[str, object] = {"id": sandbox_id, "imageDigest": agent.digest, "vcpus": 1,
                               "memoryMb": 64}
    if deadline is not None:
        body["deadlineAt"] = to_wire(deadline)
    r = await agent.client.post("/sandboxes", json=body)
    assert r.status_code == 201, r.text
    return sandbox_id


async def _status(agent: AgentUnderTest, sandbox_id: str) -> tuple[str, str | None]:
    body = (await agent.client.get(f"/sandboxes/{sandbox_id}")).json()
    return body["status"], body.get("exitReason")


def _saved(agent: AgentUnderTest, sandbox_id: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(
        (agent.settings.sandboxes_dir / sandbox_id / "sandbox.json").read_text())
    return state


@pytest.fixture
async def cleanup(agent: AgentUnderTest) -> AsyncIterator[None]:
    yield
    for container in await agent.runtime.list():
        await agent.runtime.delete(container.id)


def _sandbox(name: str, status: SandboxStatus, deadline: datetime | None) -> Sandbox:
    return Sandbox(SandboxParams(f"sb_{name}0000000", "sha256:x"), Path("/nowhere"), NOW,
                   status=status, deadline_at=deadline)


def test_past_deadline_picks_running_sandboxes_whose_time_has_come() -> None:
    sandboxes = [_sandbox("due", SandboxStatus.RUNNING, NOW),
                 _sandbox("late", SandboxStatus.RUNNING, NOW - timedelta(hours=1)),
                 _sandbox("later", SandboxStatus.RUNNING, NOW + timedelta(seconds=1)),
                 _sandbox("never", SandboxStatus.RUNNING, None),
                 _sandbox("ended", SandboxStatus.STOPPED, NOW - timedelta(hours=1))]
    assert past_deadline(sandboxes, NOW) == ["sb_due0000000", "sb_late0000000"]


async def test_the_agents_loop_ends_a_sandbox_at_its_deadline(agent: AgentUnderTest,
                                                              cleanup: None) -> None:
    soon = await _create(agent, utcnow() + timedelta(seconds=0.5))
    later = await _create(agent, utcnow() + timedelta(hours=1))
    assert await _status(agent, soon) == ("running", None)

    for _ in range(300):  # the loop looks every second
        if (await _status(agent, soon))[0] == "stopped":
            break
        await asyncio.sleep(0.01)

    assert await _status(agent, soon) == ("stopped", "timeout")
    assert _saved(agent, soon)["exitReason"] == "timeout"
    assert soon not in {c.id for c in await agent.runtime.list()}
    assert await _status(agent, later) == ("running", None)
    # Its files stay until the control plane deletes it.
    assert (agent.settings.sandboxes_dir / soon).is_dir()


async def test_a_deadline_changes_through_the_route_and_is_saved(agent: AgentUnderTest,
                                                                 cleanup: None) -> None:
    sandbox_id = await _create(agent)
    assert _saved(agent, sandbox_id)["deadlineAt"] is None
    new = utcnow() + timedelta(minutes=5)

    r = await agent.client.put(f"/sandboxes/{sandbox_id}/deadline",
                               json={"deadlineAt": to_wire(new)})

    assert r.status_code == 204
    assert from_wire(str(_saved(agent, sandbox_id)["deadlineAt"])) == new
    assert await end_past_deadline(agent.app.state.agent.sandboxes, new - timedelta(seconds=1)) == []
    assert await end_past_deadline(agent.app.state.agent.sandboxes, new) == [sandbox_id]
    assert await _status(agent, sandbox_id) == ("stopped", "timeout")
    # Ending it twice ends it once.
    assert await end_past_deadline(agent.app.state.agent.sandboxes, new) == []


async def test_the_deadline_route_refuses_unknown_sandboxes_and_bad_bodies(
        agent: AgentUnderTest) -> None:
    r = await agent.client.put("/sandboxes/sb_nosuch0000/deadline", json={"deadlineAt": None})
    assert r.status_code == 404 and r.json()["error"]["code"] == "sandbox_not_found"
    r = await agent.client.put("/sandboxes/sb_nosuch0000/deadline", json={"deadlineAt": "soon"})
    assert r.status_code == 400


async def test_the_control_planes_client_sets_and_lifts_a_deadline(agent: AgentUnderTest,
                                                                   cleanup: None) -> None:
    sandbox_id = await _create(agent, utcnow() + timedelta(hours=1))
    transport = httpx.ASGITransport(app=agent.app)
    client = AgentClient(AgentEndpoint("http://agent", SECRET), transport=transport)
    try:
        await client.sandboxes.set_deadline(sandbox_id, None)
        assert agent.app.state.agent.sandboxes.get(sandbox_id).deadline_at is None
        when = utcnow() + timedelta(minutes=1)
        await client.sandboxes.set_deadline(sandbox_id, when)
        assert agent.app.state.agent.sandboxes.get(sandbox_id).deadline_at == when
    finally:
        await client.aclose()
    assert SandboxDeadline(deadline_at=None).wire() == {"deadlineAt": None}


async def test_a_restarted_agent_keeps_the_deadline_and_enforces_it(tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                             prepare_host=False)
    runtime, store = FakeRuntime(), FakeImageStore(tmp_path / "images")
    digest = store.add("base")
    deadline = utcnow() + timedelta(seconds=1)
    sandbox_id = new_sandbox_id()
    try:
        app = create_app(settings, runtime=runtime, store=store)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://agent/internal/v1",
                headers={"Authorization": f"Bearer {SECRET}"}) as client:
            r = await client.post("/sandboxes", json={
                "id": sandbox_id, "imageDigest": digest, "deadlineAt": to_wire(deadline)})
            assert r.status_code == 201, r.text
        # The agent stopped; the sandbox runs on. The next agent knows its deadline.
        app = create_app(settings, runtime=runtime, store=store)
        async with app.router.lifespan_context(app):
            manager = app.state.agent.sandboxes
            assert manager.get(sandbox_id).deadline_at == deadline
            for _ in range(300):
                if manager.get(sandbox_id).status is SandboxStatus.STOPPED:
                    break
                await asyncio.sleep(0.01)
            assert manager.get(sandbox_id).exit_reason == "timeout"
    finally:
        for container in await runtime.list():
            await runtime.delete(container.id)


def test_the_user_reads_why_the_agent_ended_it() -> None:
    assert describe_end("timeout") == TIMED_OUT
    assert describe_end("fenced") == FENCED
