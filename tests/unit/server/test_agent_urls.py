"""Every internal agent URL encodes each path segment whole (issue 13, finding 10).

Every method of the agent client's nouns is driven with hostile ids; the request
target the transport sees must be the same route as for a plain id, with
only that one segment differing, and no query or fragment of the id's
making. The shell's WebSocket URL is checked on a real unix socket.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from qbox.core.errors import HostUnavailableError, QboxError
from qbox.protocol.code import CodeExecute, ContextCreate
from qbox.protocol.files import FileQuery, Mkdir, Rename, WriteQuery
from qbox.protocol.images import BuildRequest
from qbox.protocol.processes import CommandStart, ExecRequest, LogOffsets, StdinWrite
from qbox.protocol.sandboxes import SandboxClaim, SandboxSpec
from qbox.protocol.shells import ShellQuery
from qbox.server.agent_client import AgentClient, AgentEndpoint

HOSTILE = ["%09", "\t", "\n", "\x7f", "?a=b", "x?a=b", "../x", "..", ".", "#", "#frag", "/", "a/b",
           "%2F", " ", "ü"]
PLAIN = "sb_plain0001"
# The nouns of the client that make HTTP calls (shells are WebSockets: checked below).
NOUNS = ("sandboxes", "processes", "files", "code", "images")
# A value for each protocol body a method takes.
BODIES: dict[type, Any] = {
    SandboxSpec: SandboxSpec(id="sb_x0000000", image_digest="sha256:x"),
    SandboxClaim: SandboxClaim(envs={}, vcpus=1, memory_mb=64, deadline_at=None),
    ExecRequest: ExecRequest(cmd="true"), CommandStart: CommandStart(cmd="true"),
    StdinWrite: StdinWrite(data="x"), LogOffsets: LogOffsets(),
    FileQuery: FileQuery(path="/tmp/x"), WriteQuery: WriteQuery(path="/tmp/x"),
    Mkdir: Mkdir(path="/tmp/x"), Rename: Rename(src="/tmp/x", dst="/tmp/y"),
    ContextCreate: ContextCreate(), CodeExecute: CodeExecute(code="1"),
    BuildRequest: BuildRequest(name="img", ref="registry.example/img:1"),
}


def _encoded(segment: str) -> str:
    text = quote(segment, safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


async def _content() -> AsyncIterator[bytes]:
    yield b"data"


def _arguments(call: Any, hostile: str) -> dict[str, Any]:
    by_name: dict[str, Any] = {
        "sandbox_id": hostile, "context_id": hostile, "pid": 42, "signal": 15, "recursive": False,
        "ref": "registry.example/img:1", "name": "img", "keep": [], "length": None, "deadline": None,
        "sha256": "0" * 64, "data": b"a tar", "envs": {"A": "1"},
    }
    hints = typing.get_type_hints(call)
    values: dict[str, Any] = {}
    for parameter in inspect.signature(call).parameters:
        if parameter == "content":
            values[parameter] = _content()
        elif hints.get(parameter) in BODIES:
            values[parameter] = BODIES[hints[parameter]]
        else:
            assert parameter in by_name, f"add a value for {parameter} ({call.__qualname__})"
            values[parameter] = by_name[parameter]
    return values


def _http_methods() -> list[str]:
    """``noun.method`` for every call the client makes over HTTP (derived: a new one is
    covered), and the client's own ``health``."""
    client = AgentClient(AgentEndpoint("http://agent", "s"))
    names = ["health"]
    for noun in NOUNS:
        names += [f"{noun}.{name}" for name, _ in
                  inspect.getmembers(getattr(client, noun), inspect.iscoroutinefunction)
                  if not name.startswith("_")]
    return sorted(names)


def test_every_method_is_driven() -> None:
    # The derivation itself: the client has methods that carry ids.
    assert {"code.delete_context", "processes.exec", "processes.follow", "files.read"} <= set(
        _http_methods())


async def _targets(method: str, sandbox_id: str) -> list[bytes]:
    """The request targets (path and query, as sent) of one call."""
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(200, json={}, headers={"content-length": "2"})

    client = AgentClient(AgentEndpoint("http://agent", "s"), transport=httpx.MockTransport(handler))
    target: Any = client
    for part in method.split("."):
        target = getattr(target, part)
    try:
        result = await target(**_arguments(target, sandbox_id))
    except QboxError as exc:
        # The mock's "{}" is no protocol body: the request was made all the same.
        assert exc.code == "internal", exc
    else:
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
    [target] = await _targets("code.delete_context", "x?a=b")
    assert target == b"/internal/v1/sandboxes/x%3Fa%3Db/code/contexts/x%3Fa%3Db"


async def test_the_shell_url_encodes_its_segment(tmp_path: Path) -> None:
    """On a real unix socket: the request line the agent would see."""
    lines: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append(await reader.readline())
        writer.close()

    path = tmp_path / "agent.sock"
    server = await asyncio.start_unix_server(answer, path=str(path))
    client = AgentClient(AgentEndpoint(str(path), "s"))
    try:
        for hostile in ("\n", "?a=b", "../x", "#", "/"):
            with pytest.raises(HostUnavailableError):
                await client.shells.open(hostile, ShellQuery(cols=80, rows=24))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    targets = [line.split(b" ")[1] for line in lines]
    assert targets == [
        f"/internal/v1/sandboxes/{_encoded(h)}/shell?cols=80&rows=24".encode()
        for h in ("\n", "?a=b", "../x", "#", "/")]
