"""The shell WebSocket: refusals before the upgrade, the relay, limits, revocation, backpressure;
and the agent client's side of it against a real WebSocket server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.server import ServerConnection, serve, unix_serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from qbox.agent.runtime.base import RuntimeFailure
from qbox.agent.shell import CHUNK_BYTES
from qbox.core.errors import HostUnavailableError, QboxError, SshUnavailableError
from qbox.protocol.shells import ShellQuery
from qbox.server.agent_client import AgentClient, AgentEndpoint
from qbox.server.db.tables import ApiKey, Template
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.agent_bridge import ShellLink
from tests.unit.server.helpers import add_user_with_key, db_session, eventually
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn
from tests.unit.server.test_users_and_sessions import add_user, login

ORIGIN = "http://testserver"


def url(sandbox_id: str, query: str = "cols=80&rows=24") -> str:
    return f"/v1/sandboxes/{sandbox_id}/shell?{query}"


def refused(h: Harness, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    with pytest.raises(WebSocketDenialResponse) as caught:
        with h.client.websocket_connect(path, headers=dict(headers or {})):
            pass
    return caught.value.status_code, caught.value.json()["error"]["code"]


def closed(ws: Any) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(WebSocketDisconnect) as caught:
        while True:
            ws.receive_bytes()
    return caught.value.code, caught.value.reason


def last_shell(h: Harness, count: int = 1) -> ShellLink:
    """The count-th shell, once its login shell is up (as a client waits for a prompt)."""
    eventually(lambda: len(h.agent.shells) >= count)
    shell_ready(h)
    return h.agent.shells[count - 1]


def shell_ready(h: Harness, count: int | None = None) -> None:
    """``count`` login shells (default: one per shell opened) have set their terminals up:
    input sent before would be echoed by the terminal itself."""
    wanted = len(h.agent.shells) if count is None else count
    eventually(lambda: sum("argv" in e for e in h.agent.shell_log()) >= wanted)


@pytest.fixture
def small(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database, shell_max_message_bytes=1024, shell_max_per_key=2,
                            shell_recheck_seconds=0.2)


# --- refusals, before the upgrade ---------------------------------------------------------------


def test_refusals_come_before_the_upgrade_as_error_envelopes(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    assert refused(harness, url(sb)) == (401, "unauthenticated")
    assert refused(harness, url(sb), {"Authorization": "Bearer qbox_forged"}) == (401, "unauthenticated")
    _u, reader = add_user_with_key(harness.settings.data_dir, scopes=["sandboxes:read"])
    assert refused(harness, url(sb), harness.auth(reader)) == (403, "forbidden")
    _u, other = add_user_with_key(harness.settings.data_dir)
    assert refused(harness, url(sb), harness.auth(other)) == (404, "sandbox_not_found")
    assert refused(harness, url(sb, "cols=0&rows=24"), harness.auth()) == (400, "validation_error")
    assert refused(harness, url(sb, "cols=80&rows=abc"), harness.auth()) == (400, "validation_error")
    assert refused(harness, url(sb, "cols=1001&rows=24"), harness.auth()) == (400, "validation_error")
    harness.agent.runtime.terminal_error = RuntimeFailure("the runtime could not start a terminal")
    assert refused(harness, url(sb), harness.auth()) == (503, "ssh_unavailable")
    harness.agent.runtime.terminal_error = None
    harness.agent.faults.unreachable = True
    assert refused(harness, url(sb), harness.auth()) == (503, "host_unavailable")
    harness.agent.faults.unreachable = False
    assert harness.agent.shells == []
    harness.client.delete(f"/v1/sandboxes/{sb}", headers=harness.auth())
    assert refused(harness, url(sb), harness.auth()) == (409, "sandbox_not_active")


def test_opening_shells_counts_against_the_request_rate_limit(tmp_path: Path, database: str | None) -> None:
    for h in make_harness(tmp_path, database=database, rate_limit_requests_per_second=0.01, rate_limit_request_burst=2):
        sb = spawn(h)["id"]
        _u, key = add_user_with_key(h.settings.data_dir, role="admin")
        for _ in range(2):
            with h.client.websocket_connect(url(sb), headers=h.auth(key)):
                pass
        assert refused(h, url(sb), h.auth(key)) == (429, "rate_limited")


def test_a_template_without_ssh_refuses_shells(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    with db_session(harness.settings.data_dir) as session:
        session.execute(update(Template).where(Template.id == "tpl_python").values(enable_ssh=False))
        session.commit()
    assert refused(harness, url(sb), harness.auth()) == (422, "ssh_disabled")


def test_the_builtin_template_allows_shells(harness: Harness) -> None:
    template = harness.client.get("/v1/templates/tpl_python", headers=harness.auth()).json()
    assert template["enableSsh"] is True


def test_opening_and_refusals_are_audited(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    with harness.client.websocket_connect(url(sb, "cols=100&rows=30&command=ls+-l"), headers=harness.auth()):
        pass
    refused(harness, url(sb), {"Authorization": "Bearer qbox_forged"})
    log = entries(harness, action="sandbox.shell")
    assert [(e["outcome"], e["targetId"]) for e in log] == [(401, sb), (101, sb)]
    assert log[1]["detail"] == "100x30 user=user command='ls -l'" and log[1]["apiKeyId"]


# --- the dashboard's cookie, from our own origin only ---------------------------------------------


def test_the_session_cookie_works_from_our_own_origin_only(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    add_user(harness, "web@example.com", role="admin")
    assert login(harness, "web@example.com").status_code == 200
    assert refused(harness, url(sb)) == (403, "forbidden")  # no Origin
    assert refused(harness, url(sb), {"Origin": "https://evil.example"}) == (403, "forbidden")
    assert refused(harness, url(sb), {"Origin": "https://testserver"}) == (403, "forbidden")
    with harness.client.websocket_connect(url(sb), headers={"Origin": ORIGIN}) as ws:
        shell_ready(harness)
        ws.send_text(json.dumps({"type": "input", "data": "hi\r"}))
        assert ws.receive_bytes() == b"hi\r"
    assert len(harness.agent.shells) == 1


# --- the relay -----------------------------------------------------------------------------------


def test_frames_reach_the_agent_unchanged_and_the_exit_reaches_the_client(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    query = "cols=100&rows=30&command=top&user=root"
    with harness.client.websocket_connect(url(sb, query), headers=harness.auth()) as ws:
        shell = last_shell(harness)
        assert ShellQuery.model_validate(shell.query) == ShellQuery(cols=100, rows=30, command="top",
                                                                    user="root")
        ws.send_text('{"type": "input", "data": "ls\\r"}')
        assert ws.receive_bytes() == b"ls\r"
        ws.send_text('{"type":"resize","cols":120,"rows":40}')
        ws.send_bytes(b"\x03raw")
        assert ws.receive_bytes() == b"\x03raw"
        ws.send_text(json.dumps({"type": "input", "data": "exit 3\r"}))
        assert ws.receive_bytes() == b"exit 3\r"
        assert closed(ws) == (1000, "exit 3")
    assert shell.frames == ['{"type": "input", "data": "ls\\r"}', '{"type":"resize","cols":120,"rows":40}',
                            b"\x03raw", '{"type": "input", "data": "exit 3\\r"}']
    started, *resized = harness.agent.shell_log()
    assert started["argv"] == ["-lc", "top"] and started["size"] == [100, 30]
    assert [entry["resize"] for entry in resized] == [[120, 40]]


def test_large_output_arrives_in_binary_frames_of_at_most_64_kib(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth()) as ws:
        shell_ready(harness)
        ws.send_text(json.dumps({"type": "input", "data": "flood 200000\r"}))
        received = b""
        while len(received) < 200000 + len("flood 200000\r"):
            frame = ws.receive_bytes()
            assert 0 < len(frame) <= 64 * 1024
            received += frame
    assert received.count(b"y") == 200000


def test_the_client_closing_closes_the_agent_shell(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth()) as ws:
        shell = last_shell(harness)
        ws.close(1000)
        eventually(lambda: shell.closed)


def test_a_malformed_text_frame_closes_1007(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    for frame in ("not json", '{"type": "input"}', '{"type": "resize", "cols": 0, "rows": 5}', '{"type": "x"}'):
        with harness.client.websocket_connect(url(sb), headers=harness.auth()) as ws:
            ws.send_text(frame)
            code, reason = closed(ws)
            assert code == 1007 and reason, frame
    assert all(s.closed and s.frames == [] for s in harness.agent.shells)


def test_a_broken_agent_connection_closes_1011(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth()) as ws:
        last_shell(harness).break_connection()
        assert closed(ws) == (1011, "host agent connection lost")


# --- limits and revocation -----------------------------------------------------------------------


def test_a_message_over_the_limit_closes_1009_and_the_agent_shell(small: Harness) -> None:
    sb = spawn(small)["id"]
    with small.client.websocket_connect(url(sb), headers=small.auth()) as ws:
        shell_ready(small)
        ws.send_bytes(b"x" * 1024)
        assert ws.receive_bytes() == b"x" * 1024
        ws.send_bytes(b"x" * 1025)
        assert closed(ws) == (1009, "message over 1024 bytes")
    assert small.agent.shells[0].closed and small.agent.shells[0].frames == [b"x" * 1024]


def test_one_key_may_have_so_many_shells_open(small: Harness) -> None:
    sb = spawn(small)["id"]
    _u, other = add_user_with_key(small.settings.data_dir, role="admin")
    with small.client.websocket_connect(url(sb), headers=small.auth()) as first, \
            small.client.websocket_connect(url(sb), headers=small.auth()):
        with small.client.websocket_connect(url(sb), headers=small.auth()) as third:
            code, reason = closed(third)
            assert code == 1008 and "at most 2" in reason
        with small.client.websocket_connect(url(sb), headers=small.auth(other)) as another_key:
            shell_ready(small, 3)  # the refused third never got that far
            another_key.send_bytes(b"ok")
            assert another_key.receive_bytes() == b"ok"
        first.close()
        eventually(lambda: small.agent.shells[0].closed)
        with small.client.websocket_connect(url(sb), headers=small.auth()) as again:
            shell_ready(small, 4)
            again.send_bytes(b"ok")
            assert again.receive_bytes() == b"ok"


def test_revoking_the_key_closes_its_shells_1008(harness: Harness) -> None:
    _u, key = add_user_with_key(harness.settings.data_dir)
    sb = spawn(harness, key=key)["id"]
    key_id = harness.client.get("/v1/api-keys", headers=harness.auth(key)).json()[0]["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth(key)) as ws:
        shell = last_shell(harness)
        r = harness.client.post(f"/v1/api-keys/{key_id}/revoke", headers=harness.auth())
        assert r.status_code == 200
        assert closed(ws) == (1008, "api key revoked")
    eventually(lambda: shell.closed)


def test_disabling_the_user_closes_their_shells_1008(harness: Harness) -> None:
    user_id, key = add_user_with_key(harness.settings.data_dir)
    sb = spawn(harness, key=key)["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth(key)) as ws:
        assert harness.client.post(f"/v1/users/{user_id}/disable", headers=harness.auth()).status_code == 200
        assert closed(ws) == (1008, "api key revoked")


def test_a_revocation_made_elsewhere_ends_the_shell_at_the_next_check(small: Harness) -> None:
    _u, key = add_user_with_key(small.settings.data_dir)
    sb = spawn(small, key=key)["id"]
    with small.client.websocket_connect(url(sb), headers=small.auth(key)) as ws:
        shell_ready(small)
        ws.send_bytes(b"still here")
        assert ws.receive_bytes() == b"still here"
        time.sleep(0.5)  # several checks pass while the key is good
        ws.send_bytes(b"still here")
        assert ws.receive_bytes() == b"still here"
        with db_session(small.settings.data_dir) as session:  # as another replica would
            session.execute(update(ApiKey).values(revoked_at=ApiKey.created_at))
            session.commit()
        started = time.monotonic()
        assert closed(ws) == (1008, "api key revoked")
        assert time.monotonic() - started < 3


def test_deleting_the_sandbox_ends_its_shells(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth()) as ws:
        last_shell(harness)
        assert harness.client.delete(f"/v1/sandboxes/{sb}", headers=harness.auth()).status_code == 204
        assert closed(ws) == (1000, "exit 137")  # the sandbox's end killed the shell


def test_deleting_the_sandbox_ends_shells_its_agent_left_open(harness: Harness) -> None:
    sb = spawn(harness)["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth()) as ws:
        shell = last_shell(harness)
        shell.hide_agent_close = True  # the agent's end of the shell never arrives
        assert harness.client.delete(f"/v1/sandboxes/{sb}", headers=harness.auth()).status_code == 204
        assert closed(ws) == (1001, "sandbox ended")
    assert shell.closed



def test_a_sandbox_found_gone_from_its_host_ends_its_shells(harness: Harness) -> None:
    """An exec that finds the sandbox gone ends it as host sync would: its shells close too."""
    sb = spawn(harness)["id"]
    with harness.client.websocket_connect(url(sb), headers=harness.auth()) as ws:
        shell = last_shell(harness)
        shell.hide_agent_close = True  # only the control plane can end this shell now
        harness.agent.forget(sb)
        r = harness.client.post(f"/v1/sandboxes/{sb}/exec", json={"cmd": "true"}, headers=harness.auth())
        assert r.status_code == 409
        eventually(lambda: shell.closed)
        assert closed(ws) == (1001, "sandbox ended")

# --- backpressure, seen at the ASGI interface ----------------------------------------------------


def asgi_scope(h: Harness, sandbox_id: str) -> dict[str, Any]:
    """A WebSocket connection as a server hands it to the app (the test client cannot stall)."""
    path = f"/v1/sandboxes/{sandbox_id}/shell"
    return {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "http_version": "1.1",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"cols=80&rows=24",
            "subprotocols": [], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
            "extensions": {"websocket.http.response": {}},
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {h.admin_key}".encode())]}


def test_output_is_read_from_the_agent_only_as_fast_as_the_client_takes_it(harness: Harness) -> None:
    sb = spawn(harness)["id"]

    async def scenario() -> tuple[int, int, int]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        taking = asyncio.Event()  # the client reads only while set
        accepted = asyncio.Event()
        received: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                accepted.set()
            elif message["type"] == "websocket.send":
                await taking.wait()
                received.append(message["bytes"])

        await inbox.put({"type": "websocket.connect"})
        app = asyncio.ensure_future(harness.client.app(asgi_scope(harness, sb), inbox.get, send))  # type: ignore[arg-type]
        await asyncio.wait_for(accepted.wait(), 5)
        shell = harness.agent.shells[-1]
        while not any("argv" in entry for entry in harness.agent.shell_log()):
            await asyncio.sleep(0.01)  # its terminal is set up
        flood = json.dumps({"type": "input", "data": "flood 50000000\r"})
        await inbox.put({"type": "websocket.receive", "text": flood})
        await asyncio.sleep(0.5)
        stalled = shell.received_bytes
        taking.set()
        while sum(map(len, received)) < 1_000_000:
            await asyncio.sleep(0.01)
        await inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(app, 5)
        return stalled, shell.received_bytes, int(shell.closed)

    stalled, produced, agent_closed = harness.client.portal.call(scenario)  # type: ignore[union-attr]
    # At most the chunk being sent and the one after it were read while the client took nothing.
    assert stalled <= 2 * CHUNK_BYTES + 100
    assert produced >= 1_000_000 and agent_closed


def test_client_frames_are_received_only_once_the_agent_took_the_previous_one(harness: Harness) -> None:
    sb = spawn(harness)["id"]

    async def scenario() -> tuple[int, int]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        accepted = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            accepted.set()

        app = asyncio.ensure_future(harness.client.app(asgi_scope(harness, sb), inbox.get, send))  # type: ignore[arg-type]
        await asyncio.wait_for(accepted.wait(), 5)
        shell = harness.agent.shells[-1]
        shell.accepting.clear()  # the agent takes nothing for now
        for n in range(5):
            inbox.put_nowait({"type": "websocket.receive", "bytes": b"%d" % n})
        await asyncio.sleep(0.3)
        waiting = inbox.qsize()
        shell.accepting.set()
        await asyncio.sleep(0.3)
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(app, 5)
        return waiting, len(shell.frames)

    waiting, forwarded = harness.client.portal.call(scenario)  # type: ignore[union-attr]
    assert waiting == 4  # the first frame is stuck at the agent; the others were not read
    assert forwarded == 5


# --- the agent client over a real WebSocket ------------------------------------------------------


async def _agent_shell_server(connection: ServerConnection) -> None:
    """Echo frames (text as its bytes) until "exit", then close 1000 "exit 7"."""
    async for message in connection:
        data = message.encode() if isinstance(message, str) else message
        await connection.send(data)
        if data == b"exit":
            await connection.close(1000, "exit 7")


def _check_upgrade(connection: ServerConnection, request: Request) -> Response | None:
    if request.headers.get("Authorization") != "Bearer s3cret":
        return connection.respond(401, '{"error": {"code": "unauthenticated", "message": "wrong secret"}}\n')
    if "sb_refused" in request.path:
        body = b'{"error": {"code": "ssh_unavailable", "message": "no pty"}}'
        return Response(503, "Service Unavailable",
                        Headers({"Content-Type": "application/json", "Content-Length": str(len(body))}), body)
    return None


async def test_the_agent_client_relays_a_shell_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    paths: list[str] = []

    def record(connection: ServerConnection, request: Request) -> Response | None:
        paths.append(request.path)
        return _check_upgrade(connection, request)

    async with unix_serve(_agent_shell_server, path, process_request=record):
        client = AgentClient(AgentEndpoint(path, "s3cret"))
        query = ShellQuery(cols=100, rows=30, command="ls -l", user="root")
        async with await client.shells.open("sb_1", query) as shell:
            await shell.send('{"type": "input", "data": "x"}')
            await shell.send(b"exit")
            output = [chunk async for chunk in shell]
        assert output == [b'{"type": "input", "data": "x"}', b"exit"]
        assert (shell.close_code, shell.close_reason) == (1000, "exit 7")
        assert paths == ["/internal/v1/sandboxes/sb_1/shell?cols=100&rows=30&command=ls+-l&user=root"]
        with pytest.raises(SshUnavailableError) as refusal:
            await client.shells.open("sb_refused", ShellQuery())
        assert refusal.value.message == "no pty" and refusal.value.status == 503
        wrong = AgentClient(AgentEndpoint(path, "wrong"))
        with pytest.raises(QboxError) as unauthorised:
            await wrong.shells.open("sb_1", ShellQuery())
        assert (unauthorised.value.code, unauthorised.value.status) == ("internal", 500)
        await client.aclose()
        await wrong.aclose()
    gone = AgentClient(AgentEndpoint(str(tmp_path / "missing.sock"), "s3cret"))
    with pytest.raises(HostUnavailableError):
        await gone.shells.open("sb_1", ShellQuery())
    await gone.aclose()


async def test_the_agent_client_reaches_an_http_agent_and_keeps_its_path(tmp_path: Path) -> None:
    paths: list[str] = []

    def record(connection: ServerConnection, request: Request) -> Response | None:
        paths.append(request.path)
        return _check_upgrade(connection, request)

    async with serve(_agent_shell_server, "127.0.0.1", 0, process_request=record) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = AgentClient(AgentEndpoint(f"http://127.0.0.1:{port}/prefix/", "s3cret"))
        async with await client.shells.open("sb_2", ShellQuery()) as shell:
            await shell.send(b"exit")
            assert [chunk async for chunk in shell] == [b"exit"]
        assert paths == ["/prefix/internal/v1/sandboxes/sb_2/shell?cols=80&rows=24"]
        await shell.send(b"after the end")  # dropped, not raised
        await client.aclose()
