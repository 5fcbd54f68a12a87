"""The agent's port routes and the control plane's ``PortsClient``, over the real wire.

The agent (fake runtime) is served by uvicorn on a unix socket and reached by the
real ``AgentClient``; its one sandbox's address is pointed at 127.0.0.1, where
``tests/preview_servers.py`` listens (no root needed). Real sandboxes:
tests/integration/agent/test_ports_agent.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from qbox.agent import port_relays
from qbox.agent.app import create_app
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from qbox.core.errors import QboxError
from qbox.core.ids import new_sandbox_id
from qbox.protocol.ports import end_to_end, origin_form, unwrap, wrap
from qbox.server.agent_client import AgentClient, AgentEndpoint
from tests import preview_servers
from tests.agent_on_socket import served
from tests.unit.agent.fakes import FakeImageStore

SECRET = "ports-host-secret"


# --- pure parts ------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/", "/a/b?c=d&e=%2F", "/@x", "/?", "/a;b"])
def test_origin_form_targets_pass(target: str) -> None:
    assert origin_form(target)


@pytest.mark.parametrize("target", [
    "", "a", "*", "http://evil.example/", "//evil.example/x", "/a b", "/a\tb", "/a\r\nHost: x",
    "/é", "/\x00", "https:/x"])
def test_other_targets_are_refused(target: str) -> None:
    assert not origin_form(target)


def test_hop_by_hop_headers_and_those_connection_names_are_dropped() -> None:
    headers = [("Connection", "keep-alive, X-Private"), ("X-Private", "1"), ("Keep-Alive", "5"),
               ("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
               ("Proxy-Authorization", "Basic x"), ("Trailer", "X"), ("Accept", "a/b"),
               ("Authorization", "Bearer app-token"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert end_to_end(headers) == [("accept", "a/b"), ("authorization", "Bearer app-token"),
                                   ("set-cookie", "a=1"), ("set-cookie", "b=2")]
    handshake = [("Sec-WebSocket-Key", "k"), ("Sec-WebSocket-Protocol", "chat"),
                 ("Sec-WebSocket-Extensions", "permessage-deflate"), ("Origin", "http://o")]
    assert end_to_end(handshake, websocket=True) == [("origin", "http://o")]
    assert len(end_to_end(handshake)) == 4


def test_wrapped_headers_come_back_and_nothing_else_does() -> None:
    headers = [("host", "localhost:3000"), ("authorization", "Bearer app"), ("x-a", "1")]
    wire = wrap(headers) + [("authorization", "Bearer agent-secret"), ("server", "uvicorn"),
                            ("x-qbox-h-", "empty name")]
    assert unwrap(wire) == headers


# --- the agent on a socket ----------------------------------------------------------

@dataclass
class PortsAgent:
    app: FastAPI
    runtime: FakeRuntime
    client: AgentClient
    raw: httpx.AsyncClient  # straight to the agent's socket, with its secret
    sandbox: str
    port: int  # the test server's, on 127.0.0.1

    @property
    def relays(self) -> port_relays.PortRelays:
        relays: port_relays.PortRelays = self.app.state.port_relays
        return relays

    async def get(self, target: str, headers: list[tuple[str, str]] | None = None,
                  port: int | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        response = await self.client.ports.http(self.sandbox, port or self.port, "GET", target,
                                                headers or [], None)
        body = b"".join([chunk async for chunk in response])
        return response.status, response.headers, body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def upstream() -> Iterator[int]:
    preview_servers.CLOSES.clear()
    with preview_servers.local_server() as port:
        yield port


@pytest.fixture
async def ports_agent(tmp_path: Path, upstream: int) -> AsyncIterator[PortsAgent]:
    settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                             prepare_host=False)
    runtime = FakeRuntime()
    store = FakeImageStore(tmp_path / "images")
    digest = store.add("base")
    app = create_app(settings, runtime=runtime, store=store)  # type: ignore[arg-type]
    socket_path = tmp_path / "agent.sock"
    async with app.router.lifespan_context(app), served(app, socket_path):
        client = AgentClient(AgentEndpoint(address=str(socket_path), secret=SECRET))
        raw = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
                                base_url="http://agent/internal/v1",
                                headers={"Authorization": f"Bearer {SECRET}"})
        try:
            sandbox = new_sandbox_id()
            r = await raw.post("/sandboxes", json={"id": sandbox, "imageDigest": digest,
                                                   "vcpus": 1, "memoryMb": 256})
            assert r.status_code == 201, r.text
            # The fake network's address is not routable here: the test server's is.
            app.state.agent.sandboxes.get(sandbox).address = "127.0.0.1"
            yield PortsAgent(app, runtime, client, raw, sandbox, upstream)
        finally:
            await raw.aclose()
            await client.aclose()


async def _error(call: Any) -> QboxError:
    with pytest.raises(QboxError) as caught:
        await call
    return caught.value


# --- probe ---------------------------------------------------------------------------

async def test_probe_says_whether_something_listens(ports_agent: PortsAgent) -> None:
    assert await ports_agent.client.ports.probe(ports_agent.sandbox, ports_agent.port) is True
    started = time.monotonic()
    assert await ports_agent.client.ports.probe(ports_agent.sandbox, _free_port()) is False
    assert time.monotonic() - started < 1.5


async def test_probe_of_an_unknown_or_stopped_sandbox_is_refused(ports_agent: PortsAgent) -> None:
    error = await _error(ports_agent.client.ports.probe("sb_doesnotexist00", 80))
    assert (error.status, error.code) == (404, "sandbox_not_found")
    await ports_agent.runtime.kill(ports_agent.sandbox)
    await _until_stopped(ports_agent)
    error = await _error(ports_agent.client.ports.probe(ports_agent.sandbox, ports_agent.port))
    assert (error.status, error.code) == (409, "sandbox_not_active")


async def _until_stopped(agent: PortsAgent) -> None:
    for _ in range(200):
        if (await agent.raw.get(f"/sandboxes/{agent.sandbox}")).json()["status"] == "stopped":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the sandbox did not stop")


# --- HTTP ----------------------------------------------------------------------------

async def test_an_answer_comes_back_verbatim_on_a_kept_alive_connection(
        ports_agent: PortsAgent) -> None:
    status, headers, body = await ports_agent.get("/hello")
    assert (status, body) == (200, b"hello")
    names = [name for name, _ in headers]
    assert ("content-length", "5") in headers and ("content-type", "text/plain") in headers
    # Only the upstream's headers: none of the agent's own (its server, request id, markers).
    assert ("server", "uvicorn") not in headers
    assert not [name for name in names if name.startswith("x-qbox") or name == "x-request-id"]
    assert names.count("date") == 1
    peer = dict(headers)["x-peer-port"]
    _, again, _ = await ports_agent.get("/hello")
    assert dict(again)["x-peer-port"] == peer


async def test_status_and_repeated_headers_pass_and_hop_by_hop_ones_do_not(
        ports_agent: PortsAgent) -> None:
    for code in (201, 404, 418, 500, 503):
        status, headers, body = await ports_agent.get(f"/status?code={code}")
        assert (status, body) == (code, f"status {code}".encode())
        assert [v for n, v in headers if n == "set-cookie"] == ["a=1; Path=/", "b=2; Path=/"]
        assert ("x-custom", "yes") in headers
        assert ("x-bytes", "caf\xc3\xa9 \xff") in headers  # byte for byte
        assert not {"keep-alive", "connection", "x-drop"} & {n for n, _ in headers}


async def test_the_request_reaches_the_upstream_as_the_visitor_sent_it(
        ports_agent: PortsAgent) -> None:
    target = "/echo?a=1&b=%2F..%2F&c=%E2%9C%93#"[:-1]
    response = await ports_agent.client.ports.http(
        ports_agent.sandbox, ports_agent.port, "PATCH", target,
        [("Host", "8000-sb_x.preview.test:8080"), ("Authorization", "Bearer the-apps-own"),
         ("Cookie", "session=abc"), ("X-Forwarded-For", "203.0.113.9"),
         ("Connection", "keep-alive, X-Secret"), ("X-Secret", "hop"), ("TE", "trailers"),
         ("Proxy-Authorization", "Basic cXE6cXE="), ("X-Qbox-Target", "/elsewhere"),
         ("Accept-Encoding", "identity"), ("X-Bytes", "caf\xe9")], None)
    echo = json.loads(b"".join([chunk async for chunk in response]))
    assert echo["method"] == "PATCH" and echo["target"] == target
    seen = [(name.lower(), value) for name, value in echo["headers"]]
    assert ("host", "8000-sb_x.preview.test:8080") in seen
    assert ("authorization", "Bearer the-apps-own") in seen
    assert ("cookie", "session=abc") in seen and ("x-forwarded-for", "203.0.113.9") in seen
    assert ("accept-encoding", "identity") in seen
    assert ("x-bytes", "caf\xe9") in seen  # the server reads headers as latin-1 too
    names = {name for name, _ in seen}
    assert not {"x-secret", "te", "proxy-authorization"} & names
    assert SECRET not in json.dumps(echo)
    # The visitor's own X-Qbox-Target is only a header to the upstream, never the target.
    assert ("x-qbox-target", "/elsewhere") in seen
    # Nothing the visitor did not send (no client library defaults; a PATCH's length 0).
    assert names <= {"host", "authorization", "cookie", "x-forwarded-for", "accept-encoding",
                     "x-bytes", "x-qbox-target", "content-length"}


async def test_without_a_host_the_upstream_sees_localhost_and_its_port(
        ports_agent: PortsAgent) -> None:
    _, _, body = await ports_agent.get("/echo")
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["host"] == f"localhost:{ports_agent.port}"


async def _chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for index in range(count):
        yield bytes([65 + index % 26]) * size
        await asyncio.sleep(0)


async def test_a_request_body_streams_through_with_or_without_a_length(
        ports_agent: PortsAgent) -> None:
    expected = hashlib.sha256(b"".join([c async for c in _chunks(40, 50_000)])).hexdigest()
    for headers in ([("Content-Length", str(40 * 50_000))], []):
        response = await ports_agent.client.ports.http(
            ports_agent.sandbox, ports_agent.port, "POST", "/echo", headers,
            _chunks(40, 50_000))
        echo = json.loads(b"".join([chunk async for chunk in response]))
        assert (echo["bodyLength"], echo["bodySha256"]) == (2_000_000, expected)


async def test_events_arrive_one_by_one(ports_agent: PortsAgent) -> None:
    response = await ports_agent.client.ports.http(
        ports_agent.sandbox, ports_agent.port, "GET", "/sse?events=4&interval=0.3", [], None)
    assert ("content-type", "text/event-stream") in response.headers
    arrivals: list[float] = []
    async for chunk in response:
        for _ in range(chunk.count(b"\n\n")):
            arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    # Sent 0.3 s apart and passed on as they came (a buffering relay: all at once at the end;
    # a loaded machine may join two now and then).
    assert arrivals[-1] - arrivals[0] > 0.6 and len(set(arrivals)) >= 3, arrivals


async def test_a_download_streams_whole_and_a_head_request_has_no_body(
        ports_agent: PortsAgent) -> None:
    size = 20 * 1024 * 1024 + 7
    response = await ports_agent.client.ports.http(
        ports_agent.sandbox, ports_agent.port, "GET", f"/bytes?size={size}", [], None)
    assert ("content-length", str(size)) in response.headers
    digest, received = hashlib.sha256(), 0
    async for chunk in response:
        digest.update(chunk)
        received += len(chunk)
    assert (received, digest.hexdigest()) == (size, preview_servers.pattern_sha256(size))
    response = await ports_agent.client.ports.http(
        ports_agent.sandbox, ports_agent.port, "HEAD", f"/bytes?size={size}", [], None)
    assert ("content-length", str(size)) in response.headers
    assert b"".join([chunk async for chunk in response]) == b""


async def test_nothing_listening_is_502_port_not_reachable_at_once(
        ports_agent: PortsAgent) -> None:
    started = time.monotonic()
    error = await _error(ports_agent.get("/", port=_free_port()))
    assert (error.status, error.code) == (502, "port_not_reachable")
    assert time.monotonic() - started < 1.5


async def test_an_upstream_that_never_answers_is_504(ports_agent: PortsAgent,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(port_relays, "HEAD_TIMEOUT", 0.3)
    error = await _error(ports_agent.get("/slow?seconds=2"))
    assert (error.status, error.code) == (504, "upstream_timeout")
    await asyncio.sleep(0)
    assert ports_agent.relays.open_count(ports_agent.sandbox) == 0


async def test_unknown_and_stopped_sandboxes_are_refused(ports_agent: PortsAgent) -> None:
    error = await _error(ports_agent.client.ports.http("sb_doesnotexist00", 80, "GET", "/",
                                                       [], None))
    assert (error.status, error.code) == (404, "sandbox_not_found")
    await ports_agent.runtime.kill(ports_agent.sandbox)
    await _until_stopped(ports_agent)
    error = await _error(ports_agent.get("/hello"))
    assert (error.status, error.code) == (409, "sandbox_not_active")


@pytest.mark.parametrize("target", ["http://127.0.0.1:22/", "//127.0.0.1/", "*", "a", "/a b"])
async def test_a_target_that_is_not_origin_form_is_400(ports_agent: PortsAgent,
                                                      target: str) -> None:
    error = await _error(ports_agent.get(target))
    assert (error.status, error.code) == (400, "validation_error")
    # The agent refuses it too, whoever sends it (and says the answer is its own).
    r = await ports_agent.raw.get(f"/sandboxes/{ports_agent.sandbox}/ports/"
                                  f"{ports_agent.port}/http", headers={"X-Qbox-Target": target})
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    assert r.headers["x-qbox-agent-error"] == "1" and "x-qbox-relayed" not in r.headers


async def test_the_agent_refuses_a_missing_target_a_bad_port_and_a_wrong_secret(
        ports_agent: PortsAgent) -> None:
    base = f"/sandboxes/{ports_agent.sandbox}/ports"
    r = await ports_agent.raw.get(f"{base}/{ports_agent.port}/http")
    assert r.status_code == 400 and r.headers["x-qbox-agent-error"] == "1"
    r = await ports_agent.raw.get(f"{base}/70000/http", headers={"X-Qbox-Target": "/"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    r = await ports_agent.raw.get(f"{base}/{ports_agent.port}/http",
                                  headers={"X-Qbox-Target": "/", "Authorization": "Bearer no"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = await ports_agent.raw.post(f"{base}/{ports_agent.port}/probe",
                                   headers={"Authorization": "Bearer no"})
    assert r.status_code == 401


async def test_any_method_is_relayed(ports_agent: PortsAgent) -> None:
    for method in ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        response = await ports_agent.client.ports.http(
            ports_agent.sandbox, ports_agent.port, method, "/echo", [], None)
        assert json.loads(b"".join([c async for c in response]))["method"] == method


async def test_a_sandbox_has_a_bounded_number_of_relays(ports_agent: PortsAgent) -> None:
    ports_agent.relays.max_per_sandbox = 2
    ports = ports_agent.client.ports
    held = [await ports.http(ports_agent.sandbox, ports_agent.port, "GET",
                             "/stream?chunks=50&size=1&interval=0.1", [], None) for _ in range(2)]
    error = await _error(ports_agent.get("/hello"))
    assert (error.status, error.code) == (503, "host_no_capacity") and error.transient
    for response in held:
        await response.close()
    for _ in range(200):
        if ports_agent.relays.open_count(ports_agent.sandbox) == 0:
            break
        await asyncio.sleep(0.01)
    assert (await ports_agent.get("/hello"))[0] == 200


async def test_a_stream_ends_when_its_sandbox_stops(ports_agent: PortsAgent) -> None:
    response = await ports_agent.client.ports.http(
        ports_agent.sandbox, ports_agent.port, "GET", "/sse?events=100&interval=0.1", [], None)
    chunks = aiter(response)
    assert b"data: 0" in await anext(chunks)
    await ports_agent.runtime.kill(ports_agent.sandbox)
    started = time.monotonic()
    async with asyncio.timeout(5):
        with pytest.raises(QboxError) as caught:  # broken off, not passing for whole
            async for _ in chunks:
                pass
    assert caught.value.code == "host_unavailable"
    assert time.monotonic() - started < 3
    await asyncio.sleep(0.1)
    assert ports_agent.relays.open_count(ports_agent.sandbox) == 0


# --- WebSocket -------------------------------------------------------------------------

async def test_a_websocket_relays_text_binary_and_close_codes(ports_agent: PortsAgent) -> None:
    socket_ = await ports_agent.client.ports.websocket(
        ports_agent.sandbox, ports_agent.port, "/ws?room=1",
        [("Origin", "http://8000-sb_x.preview.test"), ("Authorization", "Bearer app"),
         ("Cookie", "c=1"), ("Sec-WebSocket-Key", "not-this-one"), ("Host", "localhost:8000"),
         ("X-Utf8", "caf\xc3\xa9")],
        ["chat.v2", "chat.v1"])
    async with socket_:
        assert socket_.subprotocol == "chat.v2"
        messages = aiter(socket_)
        await socket_.send("héllo")
        assert await anext(messages) == "héllo"
        blob = bytes(range(256)) * 4096
        await socket_.send(blob)
        assert await anext(messages) == blob
        await socket_.send("handshake")
        handshake = {name.lower(): value for name, value in json.loads(await anext(messages))}
        assert handshake["origin"] == "http://8000-sb_x.preview.test"
        assert handshake["authorization"] == "Bearer app" and handshake["cookie"] == "c=1"
        assert handshake["host"] == "localhost:8000"
        assert handshake["x-utf8"] == "caf\xc3\xa9"  # the same bytes (read as latin-1)
        assert handshake["sec-websocket-protocol"] == "chat.v2, chat.v1"
        assert handshake["sec-websocket-key"] != "not-this-one"
        assert SECRET not in json.dumps(handshake)
        await socket_.send("close:4001:bye")
        assert [m async for m in messages] == []
        assert (socket_.close_code, socket_.close_reason) == (4001, "bye")


async def test_a_visitors_close_code_reaches_the_upstream(ports_agent: PortsAgent) -> None:
    socket_ = await ports_agent.client.ports.websocket(
        ports_agent.sandbox, ports_agent.port, "/ws", [], [])
    assert socket_.subprotocol is None
    await socket_.send("ping")
    assert await anext(aiter(socket_)) == "ping"
    await socket_.close(4002, "done here")
    for _ in range(200):
        if preview_servers.CLOSES:
            break
        await asyncio.sleep(0.01)
    assert preview_servers.CLOSES == [(4002, "done here")]


async def test_websocket_refusals(ports_agent: PortsAgent) -> None:
    ports = ports_agent.client.ports
    error = await _error(ports.websocket(ports_agent.sandbox, ports_agent.port, "/ws-refuse",
                                         [], []))
    assert (error.status, error.code) == (502, "bad_gateway")
    assert error.details["upstreamStatus"] == 403
    started = time.monotonic()
    error = await _error(ports.websocket(ports_agent.sandbox, _free_port(), "/ws", [], []))
    assert (error.status, error.code) == (502, "port_not_reachable")
    assert time.monotonic() - started < 1.5
    error = await _error(ports.websocket("sb_doesnotexist00", 80, "/ws", [], []))
    assert (error.status, error.code) == (404, "sandbox_not_found")
    error = await _error(ports.websocket(ports_agent.sandbox, ports_agent.port,
                                         "ws://elsewhere/", [], []))
    assert (error.status, error.code) == (400, "validation_error")
    for host in ("user:pw@10.0.0.1", "a b", "x/y", "h:port"):
        error = await _error(ports.websocket(ports_agent.sandbox, ports_agent.port, "/ws",
                                             [("Host", host)], []))
        assert (error.status, error.code) == (400, "validation_error"), host
    await asyncio.sleep(0.05)
    assert ports_agent.relays.open_count(ports_agent.sandbox) == 0


async def test_a_websocket_closes_when_its_sandbox_stops(ports_agent: PortsAgent) -> None:
    socket_ = await ports_agent.client.ports.websocket(
        ports_agent.sandbox, ports_agent.port, "/ws", [], [])
    await ports_agent.runtime.kill(ports_agent.sandbox)
    async with asyncio.timeout(5):
        assert [m async for m in socket_] == []
    assert (socket_.close_code, socket_.close_reason) == (1001, "the sandbox stopped")
    await asyncio.sleep(0.05)
    assert ports_agent.relays.open_count(ports_agent.sandbox) == 0


# --- URLs ------------------------------------------------------------------------------

HOSTILE_IDS = ["\n", "?a=b", "../x", "..", "#", "/", "a/b", "%2F", " ", "ü"]


def _segment(value: str) -> str:
    text = quote(value, safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


async def test_a_hostile_sandbox_id_stays_one_segment_of_each_route() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(200, json={"reachable": True},
                              headers={"x-qbox-relayed": "1"})

    client = AgentClient(AgentEndpoint("http://agent", "s"),
                         transport=httpx.MockTransport(handler))
    try:
        for hostile in HOSTILE_IDS:
            await client.ports.probe(hostile, 8000)
            response = await client.ports.http(hostile, 8000, "GET", "/x?y=1", [], None)
            await response.close()
    finally:
        await client.aclose()
    expected = []
    for hostile in HOSTILE_IDS:
        base = f"/internal/v1/sandboxes/{_segment(hostile)}/ports/8000"
        expected += [f"{base}/probe".encode(), f"{base}/http".encode()]
    assert seen == expected


async def test_the_websocket_url_encodes_its_segment(tmp_path: Path) -> None:
    """On a real unix socket: the request line the agent would see."""
    lines: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append(await reader.readline())
        writer.close()

    path = tmp_path / "agent.sock"
    server = await asyncio.start_unix_server(answer, path=str(path))
    client = AgentClient(AgentEndpoint(str(path), "s"))
    try:
        for hostile in HOSTILE_IDS:
            with pytest.raises(QboxError) as caught:
                await client.ports.websocket(hostile, 8000, "/ws", [], [])
            assert caught.value.code == "host_unavailable"
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert [line.split(b" ")[1] for line in lines] == [
        f"/internal/v1/sandboxes/{_segment(h)}/ports/8000/ws".encode() for h in HOSTILE_IDS]


@pytest.mark.parametrize("framing", [b"Content-Length: 100000\r\n\r\n" + b"a" * 1000,
                                     b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"a" * 1000
                                     + b"\r\n"])
async def test_an_upload_cut_short_never_reaches_the_upstream_whole(
        ports_agent: PortsAgent, tmp_path: Path, framing: bytes) -> None:
    preview_servers.ECHOED.clear()
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "agent.sock"))
    writer.write(f"POST /internal/v1/sandboxes/{ports_agent.sandbox}/ports/{ports_agent.port}"
                 f"/http HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {SECRET}\r\n"
                 "X-Qbox-Target: /echo\r\n".encode() + framing)
    await writer.drain()
    for _ in range(100):
        if ports_agent.relays.open_count(ports_agent.sandbox) == 1:
            break
        await asyncio.sleep(0.01)
    writer.close()
    for _ in range(200):
        if ports_agent.relays.open_count(ports_agent.sandbox) == 0:
            break
        await asyncio.sleep(0.01)
    assert ports_agent.relays.open_count(ports_agent.sandbox) == 0
    await asyncio.sleep(0.2)
    assert preview_servers.ECHOED == []
    status, _, _ = await ports_agent.get("/hello")
    assert status == 200
