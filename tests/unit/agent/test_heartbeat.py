"""Heartbeats of a joined agent: the figures they carry, deadlines from the reply, fencing
after the window, going on when answered again, and a 401 that fences and stops."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from qbox.agent.heartbeat import FenceClock, Heartbeats
from qbox.agent.joined_host import JoinedHost
from qbox.agent.joining import Membership, MembershipEnded
from qbox.core.ids import new_sandbox_id
from qbox.core.timefmt import from_wire, utcnow
from tests.unit.agent.conftest import AgentUnderTest
from tests.unit.agent.control_plane import URL, StandInControlPlane

ADDRESS = "http://10.0.0.7:7070"


async def _create(agent: AgentUnderTest) -> str:
    sandbox_id = new_sandbox_id()
    r = await agent.client.post("/sandboxes", json={
        "id": sandbox_id, "imageDigest": agent.digest, "vcpus": 1, "memoryMb": 64})
    assert r.status_code == 201, r.text
    return sandbox_id


async def _status(agent: AgentUnderTest, sandbox_id: str) -> tuple[str, str | None]:
    body = (await agent.client.get(f"/sandboxes/{sandbox_id}")).json()
    return body["status"], body.get("exitReason")


@pytest.fixture
async def cleanup(agent: AgentUnderTest) -> AsyncIterator[None]:
    yield
    for container in await agent.runtime.list():
        await agent.runtime.delete(container.id)


def _beats(agent: AgentUnderTest, plane: StandInControlPlane, *, every: float = 0.02,
           fence: float = 60.0) -> Heartbeats:
    joined = Membership(plane.host_id, URL, plane.credential, every, fence)
    return Heartbeats(plane.client(), joined, JoinedHost(agent.app.state.agent, ADDRESS))


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --- the decision ------------------------------------------------------------------------

def test_the_fence_is_due_after_a_whole_silent_window_and_once() -> None:
    clock = FenceClock(fence_seconds=10, last_answer=100)
    assert not clock.due(109.9)
    assert clock.due(110)
    clock.fenced = True
    assert not clock.due(500)  # fenced already: nothing more to kill
    assert clock.answered(501) is True  # the fence ends with the first answer
    assert not clock.due(510) and clock.due(511)
    assert clock.answered(511) is False


# --- the loop ----------------------------------------------------------------------------

async def test_a_heartbeat_carries_the_figures_and_brings_the_deadlines(
        agent: AgentUnderTest, cleanup: None) -> None:
    sandbox_id = await _create(agent)
    deadline = utcnow() + timedelta(hours=1)
    plane = StandInControlPlane(deadlines={sandbox_id: deadline}, heartbeat_seconds=2.5,
                                fence_seconds=30)
    beats = _beats(agent, plane)

    await beats.step()

    [report] = plane.heartbeats
    assert plane.heartbeat_auth == [f"Bearer {plane.credential}"]
    assert report["address"] == ADDRESS and report["sandboxes"] == 1
    assert set(report["usage"]) == {"cpuPercent", "memoryUsedMb", "diskUsedMb", "diskTotalMb"}
    assert report["images"] == [agent.digest] and report["maxSandboxes"] == 1000
    # The reply's intervals and deadlines are the agent's from now on (deadlines saved).
    assert (beats.interval, beats.fence.fence_seconds) == (2.5, 30)
    state = json.loads((agent.settings.sandboxes_dir / sandbox_id / "sandbox.json").read_text())
    assert from_wire(state["deadlineAt"]) == deadline
    # A later reply without a deadline for it (null) lifts it.
    plane.deadlines = {sandbox_id: None}
    await beats.step()
    assert agent.app.state.agent.sandboxes.get(sandbox_id).deadline_at is None


async def test_no_answer_for_the_window_fences_then_an_answer_ends_the_fence(
        agent: AgentUnderTest, cleanup: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qbox.agent")
    sandboxes = [await _create(agent), await _create(agent)]
    plane = StandInControlPlane(down=True, heartbeat_seconds=0.02, fence_seconds=0.3)
    beats = _beats(agent, plane, fence=0.3)
    loop = asyncio.create_task(beats.run())
    try:
        await asyncio.sleep(0.15)
        assert [await _status(agent, s) for s in sandboxes] == [("running", None)] * 2

        async def all_fenced() -> bool:
            return [await _status(agent, s) for s in sandboxes] == [("stopped", "fenced")] * 2
        await _eventually(all_fenced)
        await asyncio.sleep(0.2)  # more silent beats: still one fence, one line
        fenced = [r.getMessage() for r in caplog.records if "fenced" in r.getMessage()]
        assert len(fenced) == 1
        assert fenced[0].startswith("fenced: no control plane answered for ")
        assert fenced[0].endswith("s; killed 2 sandbox(es)")
        assert caplog.records[-1].levelname == "WARNING"

        plane.down = False  # the control plane is back: the loop goes on

        async def answered_again() -> bool:
            return "answered again" in caplog.text and len(plane.heartbeats) >= 3
        await _eventually(answered_again)
        assert not loop.done() and not beats.fence.fenced
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_5xx_and_garbage_are_not_answers_and_never_end_the_loop(
        agent: AgentUnderTest, cleanup: None) -> None:
    sandbox_id = await _create(agent)
    plane = StandInControlPlane(failing=True)
    beats = _beats(agent, plane, fence=0.2)
    loop = asyncio.create_task(beats.run())
    try:
        async def fenced() -> bool:
            return await _status(agent, sandbox_id) == ("stopped", "fenced")
        await _eventually(fenced)
        assert not loop.done()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_401_fences_at_once_and_stops(agent: AgentUnderTest, cleanup: None,
                                              caplog: pytest.LogCaptureFixture) -> None:
    sandbox_id = await _create(agent)
    plane = StandInControlPlane(revoked=True)
    beats = _beats(agent, plane, fence=3600)

    with pytest.raises(MembershipEnded, match="removed, or its credential revoked.*host.json"):
        await asyncio.wait_for(beats.run(), 5)

    assert await _status(agent, sandbox_id) == ("stopped", "fenced")
    assert "killed 1 sandbox(es)" in caplog.text


async def test_a_connection_error_is_not_an_answer(agent: AgentUnderTest) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    joined = Membership("host_x", URL, "cred", 0.05, 60)
    beats = Heartbeats(httpx.AsyncClient(transport=httpx.MockTransport(refuse)), joined,
                       JoinedHost(agent.app.state.agent, ADDRESS))
    assert await beats.beat() is None


def test_the_host_file_round_trips(tmp_path: Path) -> None:
    joined = Membership("host_a", URL, "cred-a", 2.0, 20.0)
    joined.save(tmp_path)
    assert Membership.load(tmp_path) == joined
    assert "cred-a" not in repr(joined)
    assert Membership.load(tmp_path / "nowhere") is None
    (tmp_path / "host.json").write_text('{"hostId": "host_a"')
    with pytest.raises(MembershipEnded, match="host.json is damaged.*join again"):
        Membership.load(tmp_path)
