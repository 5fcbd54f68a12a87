"""Long agent calls never hold the pool short calls share, and are bounded themselves
(issue 13, finding 4). Against a real HTTP server on a unix socket that never
answers an /exec."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qbox.core.errors import HostNoCapacityError
from qbox.protocol.processes import ExecRequest
from qbox.server.agent_client import AgentClient, AgentEndpoint
from qbox.server.agent_client import transport as agents

HEALTH = b'{"version":"0","runtime":"fake","runtimes":["crun"],"sandboxes":0}'


@contextlib.asynccontextmanager
async def _agent(path: Path) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """Answers /health at once; holds every other request open, never answering."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            while (await reader.readline()).strip():
                pass  # headers (the calls here send no body)
            if b"/health" in line:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(HEALTH), HEALTH))
                await writer.drain()
            else:
                held.append(writer)
                return

    server = await asyncio.start_unix_server(serve, path=str(path))
    try:
        yield held
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


# As many long calls as the short calls' pool has connections: before, they took them all.
LONG = 100


async def test_short_calls_pass_while_long_ones_fill_their_own_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (raising=False: the same test shows the stall on a client without the bound.)
    monkeypatch.setattr(agents, "MAX_LONG_CALLS", LONG, raising=False)
    monkeypatch.setattr(agents, "LONG_LIMITS", httpx.Limits(max_connections=LONG,
                                                            max_keepalive_connections=0),
                        raising=False)
    monkeypatch.setattr(agents, "LONG_POOL_WAIT", 0.5, raising=False)
    socket = tmp_path / "agent.sock"
    async with _agent(socket) as held:
        client = AgentClient(AgentEndpoint(str(socket), "s"))
        try:
            long_calls = [asyncio.ensure_future(client.processes.exec("sb_x", ExecRequest(cmd="sleep")))
                          for _ in range(LONG)]
            while len(held) < LONG:
                await asyncio.sleep(0.01)
            # Each long call has a connection of its own; short calls still have theirs.
            for _ in range(150):
                assert (await asyncio.wait_for(client.health(), 5)).version == "0"
            # Past the bound, a long call is refused (503, transient), not queued forever.
            with pytest.raises(HostNoCapacityError):
                await client.processes.exec("sb_x", ExecRequest(cmd="sleep"))
            assert not any(call.done() for call in long_calls)
            for call in long_calls:
                call.cancel()
            await asyncio.gather(*long_calls, return_exceptions=True)
        finally:
            await client.aclose()
