"""A port inside a real sandbox, reached through the agent's port routes with ``PortsClient``.

The agent (real crun, gVisor for one case) is served by uvicorn on a unix socket in
this process and reached by the control plane's real ``AgentClient``; inside the
sandbox ``tests/preview_servers.py`` (stdlib only) serves HTTP/1.1 and a WebSocket
echo. Run under ``flock /tmp/qbox-itest.lock``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qbox.core.errors import QboxError
from qbox.server.agent_client import AgentClient, AgentEndpoint
from tests import preview_servers
from tests.agent_on_socket import served
from tests.integration.agent.conftest import SECRET, Agent

pytestmark = pytest.mark.integration

PORT = 8000


@dataclass
class Reached:
    agent: Agent
    client: AgentClient


@pytest.fixture
async def reached(agent: Agent, tmp_path: Path) -> AsyncIterator[Reached]:
    async with served(agent.app, tmp_path / "agent.sock") as socket_path:
        client = AgentClient(AgentEndpoint(address=str(socket_path), secret=SECRET))
        try:
            yield Reached(agent, client)
        finally:
            await client.aclose()


async def start_server(reached: Reached, sandbox: str, port: int = PORT) -> None:
    """The preview test server in the sandbox, once its port answers a probe."""
    r = await reached.agent.client.post(f"/sandboxes/{sandbox}/commands", json={
        "cmd": "python3", "args": ["-c", preview_servers.source(), str(port)]})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 15
    while not await reached.client.ports.probe(sandbox, port):
        assert time.monotonic() < deadline, "the server in the sandbox never listened"
        await asyncio.sleep(0.1)


async def body_of(reached: Reached, sandbox: str, target: str,
                  method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    response = await reached.client.ports.http(sandbox, PORT, method, target, [], None)
    body = b"".join([chunk async for chunk in response])
    return response.status, dict(response.headers), body


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("spec", [{"allowInternetAccess": False}, {"runtime": "runsc"}],
                         ids=["crun-no-internet", "runsc"])
async def test_a_server_in_a_sandbox_is_reached_over_http_and_websocket(
        reached: Reached, spec: dict[str, object]) -> None:
    sandbox = await reached.agent.create(**spec)
    ports = reached.client.ports
    assert await ports.probe(sandbox, PORT) is False
    await start_server(reached, sandbox)
    assert await ports.probe(sandbox, PORT) is True

    # Keep-alive: the second answer comes over the first one's connection.
    status, headers, body = await body_of(reached, sandbox, "/hello")
    assert (status, body) == (200, b"hello")
    assert (await body_of(reached, sandbox, "/hello"))[1]["x-peer-port"] == headers["x-peer-port"]
    status, headers, body = await body_of(reached, sandbox, "/status?code=418")
    assert (status, body, headers["x-custom"]) == (418, b"status 418", "yes")

    # A request body streamed in, chunked.
    async def parts() -> AsyncIterator[bytes]:
        for index in range(64):
            yield bytes([index]) * 16384
    response = await ports.http(sandbox, PORT, "POST", "/echo?x=1",
                                [("Authorization", "Bearer the-apps-own")], parts())
    echo = json.loads(b"".join([chunk async for chunk in response]))
    expected = hashlib.sha256(b"".join(bytes([i]) * 16384 for i in range(64))).hexdigest()
    assert (echo["target"], echo["bodyLength"], echo["bodySha256"]) == (
        "/echo?x=1", 64 * 16384, expected)
    seen = {name.lower(): value for name, value in echo["headers"]}
    assert seen["authorization"] == "Bearer the-apps-own" and seen["host"] == "localhost:8000"

    # WebSocket echo with the upstream's subprotocol and close code.
    socket_ = await ports.websocket(sandbox, PORT, "/ws", [("Origin", "http://preview.test")],
                                    ["v1.hmr"])
    async with socket_:
        assert socket_.subprotocol == "v1.hmr"
        messages = aiter(socket_)
        await socket_.send("hi")
        assert await anext(messages) == "hi"
        await socket_.send(b"\x00\x01" * 50_000)
        assert await anext(messages) == b"\x00\x01" * 50_000
        await socket_.send("close:4000:reload")
        assert [m async for m in messages] == []
        assert (socket_.close_code, socket_.close_reason) == (4000, "reload")

    # Nothing on another port: refused at once.
    started = time.monotonic()
    with pytest.raises(QboxError) as caught:
        await ports.http(sandbox, PORT + 1, "GET", "/", [], None)
    assert (caught.value.status, caught.value.code) == (502, "port_not_reachable")
    assert time.monotonic() - started < 1.5
    assert await ports.probe(sandbox, PORT + 1) is False


async def test_events_arrive_one_by_one_and_a_download_passes_in_bounded_memory(
        reached: Reached) -> None:
    sandbox = await reached.agent.create()
    await start_server(reached, sandbox)
    ports = reached.client.ports

    response = await ports.http(sandbox, PORT, "GET", "/sse?events=5&interval=0.2", [], None)
    arrivals = []
    async for chunk in response:
        arrivals += [time.monotonic()] * chunk.count(b"\n\n")
    assert len(arrivals) == 5
    # Sent 0.2 s apart and passed on as they came (a buffering relay: all at once at the end;
    # a loaded machine may join two now and then).
    assert arrivals[-1] - arrivals[0] > 0.6 and len(set(arrivals)) >= 4, arrivals

    response = await ports.http(sandbox, PORT, "GET", "/stream?chunks=4&size=3&interval=0.2",
                                [], None)
    assert b"".join([chunk async for chunk in response]) == b"x" * 12

    size = 100 * 1024 * 1024
    response = await ports.http(sandbox, PORT, "GET", f"/bytes?size={size}", [], None)
    assert dict(response.headers)["content-length"] == str(size)
    digest, received, before, peak = hashlib.sha256(), 0, rss_bytes(), 0
    started = time.monotonic()
    async for chunk in response:
        digest.update(chunk)
        received += len(chunk)
        if received % (8 * 1024 * 1024) < len(chunk):
            peak = max(peak, rss_bytes())
    elapsed = time.monotonic() - started
    assert (received, digest.hexdigest()) == (size, preview_servers.pattern_sha256(size))
    assert peak - before < 40 * 1024 * 1024, (before, peak)
    print(f"100 MiB through the agent's port relay: {elapsed:.2f} s "
          f"({size / elapsed / 1e6:.0f} MB/s), RSS growth {(peak - before) / 1e6:.1f} MB")


async def test_a_stream_and_a_websocket_end_when_the_sandbox_is_deleted(
        reached: Reached) -> None:
    sandbox = await reached.agent.create()
    await start_server(reached, sandbox)
    ports = reached.client.ports
    response = await ports.http(sandbox, PORT, "GET", "/sse?events=1000&interval=0.1", [], None)
    chunks = aiter(response)
    assert b"data: 0" in await anext(chunks)
    socket_ = await ports.websocket(sandbox, PORT, "/ws", [], [])
    r = await reached.agent.client.delete(f"/sandboxes/{sandbox}")
    assert r.status_code == 204
    started = time.monotonic()
    async with asyncio.timeout(5):
        with pytest.raises(QboxError):  # broken off, not ended as if complete
            async for _ in chunks:
                pass
        assert [m async for m in socket_] == []
    assert time.monotonic() - started < 3
    assert socket_.close_code in (1001, 1011)
    with pytest.raises(QboxError) as caught:
        await ports.probe(sandbox, PORT)
    assert caught.value.code == "sandbox_not_found"
