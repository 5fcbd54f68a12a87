"""Joining a control plane: host.json and the agent secret, a restart that joins no more,
refusals, retries while the control plane is away, and the report a join carries."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qbox.agent.app import create_app
from qbox.agent.joined_host import JoinedHost, take_part
from qbox.agent.joining import HOST_FILE, Membership, MembershipEnded, membership
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from tests.unit.agent.conftest import SECRET, AgentUnderTest
from tests.unit.agent.control_plane import URL, StandInControlPlane
from tests.unit.agent.fakes import FakeImageStore

ADDRESS = "http://10.0.0.7:7070"


@pytest.fixture
async def joining(tmp_path: Path) -> AsyncIterator[AgentUnderTest]:
    settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                             prepare_host=False, join_url=URL, join_token="tok-1",
                             labels={"zone": "a"}, max_sandboxes=7)
    store = FakeImageStore(tmp_path / "images")
    digest = store.add("base")
    runtime = FakeRuntime()
    app = create_app(settings, runtime=runtime, store=store)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://agent/internal/v1",
        ) as client:
            yield AgentUnderTest(app, client, runtime, store, settings, digest)
            for container in await runtime.list():
                await runtime.delete(container.id)


async def _join(agent: AgentUnderTest, plane: StandInControlPlane,
                settings: AgentSettings | None = None) -> Membership:
    host = JoinedHost(agent.app.state.agent, ADDRESS)
    async with plane.client() as http:
        return await membership(settings or agent.settings, http, agent.app.state.secret,
                                host.report, retry_seconds=0.01)


async def _health(agent: AgentUnderTest, secret: str) -> int:
    r = await agent.client.get("/health", headers={"Authorization": f"Bearer {secret}"})
    return r.status_code


async def test_a_join_keeps_the_host_file_and_the_secret_the_control_plane_presents(
        joining: AgentUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    plane = StandInControlPlane()
    assert await _health(joining, SECRET) == 200

    joined = await _join(joining, plane)

    assert (joined.host_id, joined.control_plane, joined.credential) == (
        plane.host_id, URL, plane.credential)
    host_file = joining.settings.data_dir / HOST_FILE
    assert stat.S_IMODE(host_file.stat().st_mode) == 0o600
    assert json.loads(host_file.read_text())["hostId"] == plane.host_id
    secret_file = joining.settings.data_dir / "agent-secret"
    assert secret_file.read_text().strip() == plane.agent_secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    # The bearer check reads the secret it holds now: the old one is refused at once.
    assert await _health(joining, plane.agent_secret) == 200
    assert await _health(joining, SECRET) == 401
    # The token is used, never kept nor logged.
    for path in joining.settings.data_dir.rglob("*"):
        assert not path.is_file() or b"tok-1" not in path.read_bytes()
    assert "tok-1" not in caplog.text and "tok-1" not in repr(joining.settings)


async def test_the_join_carries_a_true_report(joining: AgentUnderTest) -> None:
    plane = StandInControlPlane()
    await _join(joining, plane)
    [request] = plane.joins
    report = request["report"]
    assert report["address"] == ADDRESS
    assert report["runtime"] == "fake" and report["sandboxes"] == 0
    assert report["images"] == [joining.digest]
    assert report["maxSandboxes"] == 7 and report["labels"] == {"zone": "a"}
    assert report["hostname"]
    assert report["usage"]["memoryUsedMb"] > 0 and report["usage"]["diskTotalMb"] > 0
    assert 0 <= report["usage"]["cpuPercent"] <= 100


async def test_a_later_start_joins_no_more_even_with_a_token(joining: AgentUnderTest) -> None:
    plane = StandInControlPlane(tokens={"tok-1", "tok-2"})
    first = await _join(joining, plane)

    again = await _join(joining, plane, AgentSettings(
        data_dir=joining.settings.data_dir, join_url=URL, join_token="tok-2"))

    assert again == first
    assert len(plane.joins) == 1 and "tok-2" in plane.tokens


async def test_a_refused_join_ends_with_the_control_planes_words(
        joining: AgentUnderTest) -> None:
    plane = StandInControlPlane(tokens=set())
    with pytest.raises(MembershipEnded, match="unknown, used or expired.*invalid_join_token"):
        await _join(joining, plane)
    assert not (joining.settings.data_dir / HOST_FILE).exists()
    assert await _health(joining, SECRET) == 200


async def test_a_join_without_a_token_is_refused_before_asking(tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path, join_url=URL)
    plane = StandInControlPlane()
    with pytest.raises(MembershipEnded, match="--token"):
        async with plane.client() as http:
            await membership(settings, http, None, None)  # type: ignore[arg-type]
    assert plane.joins == []


async def test_a_control_plane_away_failing_or_limiting_is_asked_again(
        joining: AgentUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    plane = StandInControlPlane()
    host = JoinedHost(joining.app.state.agent, ADDRESS)
    outages: list[httpx.Response | None] = [
        None, httpx.Response(503), httpx.Response(429, json={"error": {
            "code": "rate_limited", "message": "too many failed authentications"}})]

    def recover(request: httpx.Request) -> httpx.Response:
        if outages:
            outage = outages.pop(0)
            if outage is None:
                raise httpx.ConnectError("connection refused", request=request)
            return outage
        return plane._handle(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(recover)) as http:
        joined = await membership(joining.settings, http, joining.app.state.secret,
                                  host.report, retry_seconds=0.01)
    assert joined.host_id == plane.host_id and len(plane.joins) == 1
    assert caplog.text.count("trying again") == 3


async def test_take_part_joins_then_heartbeats_until_refused(joining: AgentUnderTest) -> None:
    plane = StandInControlPlane(heartbeat_seconds=0.02)

    async def revoke_after_two_beats() -> None:
        while len(plane.heartbeats) < 2:
            await asyncio.sleep(0.01)
        plane.revoked = True

    revoking = asyncio.create_task(revoke_after_two_beats())
    with pytest.raises(MembershipEnded, match=f"delete {HOST_FILE}"):
        await asyncio.wait_for(take_part(joining.app, ADDRESS, plane.client()), 5)
    await revoking
    assert len(plane.joins) == 1
    assert plane.heartbeat_auth[0] == f"Bearer {plane.credential}"
    assert plane.heartbeats[0]["address"] == ADDRESS
