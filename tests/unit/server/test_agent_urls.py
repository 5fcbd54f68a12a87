"""Every internal agent URL encodes each path segment whole (issue 13, finding 10).

Every method of the agent client is driven with hostile ids; the request
target the transport sees must be the same route as for a plain id, with
only that one segment differing, and no query or fragment of the id's
making. The shell's WebSocket URL is checked on a real unix socket.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from qbox.core.errors import HostUnavailableError
from qbox.server.agents import AgentClient, AgentEndpoint, HttpAgentClient, ShellOptions, WriteOptions

HOSTILE = ["%09", "\t", "\n", "\x7f", "?a=b", "x?a=b", "../x", "..", ".", "#", "#frag", "/", "a/b",
           "%2F", " ", "ü"]
PLAIN = "sb_plain0001"


def _encoded(segment: str) -> str:
    text = quote(segment, safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


async def _content() -> AsyncIterator[bytes]:
    yield b"data"


def _arguments(name: str, parameters: list[str], hostile: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sandbox_id": hostile, "context_id": hostile, "pid": 42, "path": "/tmp/x",
        "user": None, "body": {}, "spec": {}, "offsets": {}, "signal": 15, "recursive": False,
        "ref": "registry.example/img:1", "name": "img", "keep": [], "options": WriteOptions(),
    }
    if name == "write_file":
        values["content"] = _content()
    missing = [p for p in parameters if p not in values]
    assert not missing, f"add a value for {missing} ({name})"
    return {p: values[p] for p in parameters}


def _http_methods() -> list[str]:
    """The agent client's methods that make HTTP calls (derived: a new one is covered)."""
    names = [n for n, _ in inspect.getmembers(AgentClient, inspect.isfunction)
             if not n.startswith("_")]
    return sorted(set(names) - {"open_shell", "aclose"})


def test_every_method_is_driven() -> None:
    # The derivation itself: the protocol has methods that carry ids.
    assert {"delete_code_context", "exec", "follow_command", "read_file"} <= set(_http_methods())


async def _targets(method: str, sandbox_id: str) -> list[bytes]:
    """The request targets (path and query, as sent) of one call."""
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(200, json={}, headers={"content-length": "2"})

    client = HttpAgentClient(AgentEndpoint("http://agent", "s"),
                             transport=httpx.MockTransport(handler))
    call = getattr(client, method)
    parameters = [p for p in inspect.signature(call).parameters]
    result = await call(**_arguments(method, parameters, sandbox_id))
    for closer in ("close", "aclose"):
        if callable(getattr(result, closer, None)):
            await getattr(result, closer)()
            break
    await client.aclose()
    return seen


@pytest.mark.parametrize("method", _http_methods())
async def test_hostile_ids_stay_one_segment_of_the_same_route(method: str) -> None:
    plain = await _targets(method, PLAIN)
    assert plain and all(target.startswith(b"/internal/v1/") for target in plain)
    for hostile in HOSTILE:
        found = await _targets(method, hostile)
        encoded = _encoded(hostile).encode()
        # The same route and query, with the plain id's segment(s) replaced by the encoded id.
        expected = [target.replace(PLAIN.encode(), encoded) for target in plain]
        assert found == expected, hostile
        # Nothing a URL parser could read as a fragment, a space or a control character.
        assert all(b"#" not in t and all(0x20 < byte < 0x7f for byte in t) for t in found)


async def test_a_hostile_id_cannot_add_a_query() -> None:
    [target] = await _targets("delete_code_context", "x?a=b")
    assert target == b"/internal/v1/sandboxes/x%3Fa%3Db/code/contexts/x%3Fa%3Db"


async def test_the_shell_url_encodes_its_segment(tmp_path: Path) -> None:
    """On a real unix socket: the request line the agent would see."""
    lines: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append(await reader.readline())
        writer.close()

    path = tmp_path / "agent.sock"
    server = await asyncio.start_unix_server(answer, path=str(path))
    client = HttpAgentClient(AgentEndpoint(str(path), "s"))
    try:
        for hostile in ("\n", "?a=b", "../x", "#", "/"):
            with pytest.raises(HostUnavailableError):
                await client.open_shell(hostile, ShellOptions(cols=80, rows=24))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    targets = [line.split(b" ")[1] for line in lines]
    assert targets == [
        f"/internal/v1/sandboxes/{_encoded(h)}/shell?cols=80&rows=24".encode()
        for h in ("\n", "?a=b", "../x", "#", "/")]
