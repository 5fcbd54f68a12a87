"""``Shell`` / ``AsyncShell`` against a real WebSocket server on 127.0.0.1 (tests/unit/sdk/fake_shell.py)."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.frames import Close
from websockets.sync.server import ServerConnection

from qbox import (
    AsyncSandbox,
    ConnectionConfig,
    ConnectionFailedError,
    QboxError,
    RateLimitedError,
    RequestTimeoutError,
    Sandbox,
    SandboxNotFoundError,
    SshDisabledError,
)
from qbox.sdk import _shell_ops as ops
from qbox.sdk._async_shell import AsyncShell
from qbox.sdk._shell import Shell
from tests.unit.sdk.fake_shell import PREFIX, FakeShellServer, running_shell_server
from tests.unit.sdk.fakes import API_KEY, FakeServer, reply, sandbox
from tests.unit.sdk.test_async import describe, public_members


@pytest.fixture
def ws_server() -> Iterator[FakeShellServer]:
    with running_shell_server() as server:
        yield server


def config(server: FakeShellServer, **overrides: object) -> ConnectionConfig:
    values: dict[str, object] = {"api_key": API_KEY, "base_url": server.base_url, "request_timeout": 5.0}
    values.update(overrides)
    return ConnectionConfig(**values)  # type: ignore[arg-type]


def talk_then_exit(server: FakeShellServer, ws: ServerConnection) -> None:
    """Collect three frames, answer with output (one of it a text frame), then exit 7."""
    for _ in range(3):
        server.frames.put(ws.recv())
    ws.send(b"hello ")
    ws.send("w\u00f6rld")
    ws.close(1000, "exit 7")


def silent(server: FakeShellServer, ws: ServerConnection) -> None:
    """Say nothing until the client goes away."""
    for _ in ws:
        pass


# --- the pure parts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("close", "expected"),
    [
        (Close(1000, "exit 0"), 0),
        (Close(1000, "exit 7"), 7),
        (Close(1000, "exit 137"), 137),
        (Close(1000, ""), None),
        (Close(1000, "exit"), None),
        (Close(1000, "exit 7 and more"), None),
        (Close(1011, "exit 3"), None),
        (Close(1008, "api key revoked"), None),
        (None, None),
    ],
)
def test_exit_code_comes_from_a_normal_close_saying_exit_n(close: Close | None, expected: int | None) -> None:
    assert ops.exit_code(close) == expected


def test_frames_use_json_default_separators() -> None:
    assert ops.input_frame("ls\r") == '{"type": "input", "data": "ls\\r"}'
    assert ops.input_frame("\u0003") == '{"type": "input", "data": "\\u0003"}'
    assert ops.input_frame(b"\x03\xff") == b"\x03\xff"
    assert ops.resize_frame(120, 40) == '{"type": "resize", "cols": 120, "rows": 40}'


def test_the_url_keeps_the_path_prefix_and_switches_the_scheme() -> None:
    from qbox.sdk._api import Api
    from qbox.sdk._config import resolve

    api = Api(resolve(ConnectionConfig(api_key=API_KEY, base_url="https://qbox.example/api/", request_timeout=12)))
    target = ops.shell_target(api, "sb_1", 100, 30, "ls -l", "root")
    assert target.url == "wss://qbox.example/api/v1/sandboxes/sb_1/shell?cols=100&rows=30&command=ls+-l&user=root"
    assert target.headers == {"Authorization": f"Bearer {API_KEY}"}
    assert target.user_agent.startswith("qbox-python/")
    assert target.open_timeout == 12
    plain = Api(resolve(ConnectionConfig(api_key=API_KEY, base_url="http://127.0.0.1:8080")))
    assert ops.shell_target(plain, "sb_1", 80, 24, None, None).url == (
        "ws://127.0.0.1:8080/v1/sandboxes/sb_1/shell?cols=80&rows=24"
    )


def test_sync_and_async_shells_have_the_same_surface() -> None:
    sync_members, async_members = public_members(Shell), public_members(AsyncShell)
    assert sorted(sync_members) == sorted(async_members)
    for name, member in sync_members.items():
        assert describe(member) == describe(async_members[name]), name
    assert describe(public_members(Sandbox)["shell"]) == describe(public_members(AsyncSandbox)["shell"])


def test_without_websockets_the_error_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "websockets", None)  # import websockets now raises ImportError
    with pytest.raises(QboxError, match=r"qbox\[shell\]") as info:
        ops.require_websockets()
    assert info.value.code == "missing_dependency"


# --- sync, over the wire ------------------------------------------------------


def test_shell_sends_the_frames_and_reads_output_until_exit(ws_server: FakeShellServer) -> None:
    ws_server.script = talk_then_exit
    with Shell.open("sb_1", 100, 30, command="ls -l", user="root", config=config(ws_server)) as shell:
        assert shell.exit_code is None
        shell.send("ls\r")
        shell.send(b"\x03\xff")
        shell.resize(120, 40)
        output = b"".join(shell)
        assert output == "hello w\u00f6rld".encode()
        assert shell.exit_code == 7
        assert shell.close_code == 1000 and shell.close_reason == "exit 7"
        assert shell.recv() is None  # closed: no waiting
        assert shell.wait() == 7
    upgrade = ws_server.upgrades[0]
    assert upgrade.path == PREFIX + "/v1/sandboxes/sb_1/shell"
    assert upgrade.query == {"cols": "100", "rows": "30", "command": "ls -l", "user": "root"}
    assert upgrade.headers["authorization"] == f"Bearer {API_KEY}"
    assert upgrade.headers["user-agent"].startswith("qbox-python/")
    assert ws_server.next_frame() == '{"type": "input", "data": "ls\\r"}'
    assert ws_server.next_frame() == b"\x03\xff"
    assert ws_server.next_frame() == '{"type": "resize", "cols": 120, "rows": 40}'


def test_defaults_are_80_by_24_and_no_command_or_user(ws_server: FakeShellServer) -> None:
    with Shell.open("sb_1", config=config(ws_server)):
        pass
    assert ws_server.upgrades[0].query == {"cols": "80", "rows": "24"}


def test_sandbox_shell_uses_the_sandbox_connection(ws_server: FakeShellServer) -> None:
    http = FakeServer().on("GET", PREFIX + "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    ws_server.script = talk_then_exit
    sb = Sandbox.connect("sb_1", config=config(ws_server, transport=httpx.MockTransport(http.handle)))
    try:
        with sb.shell(command="top") as shell:
            shell.send("a")
            shell.send("b")
            shell.send("c")
            assert shell.wait(timeout=5) == 7
    finally:
        sb.close()
    assert ws_server.upgrades[0].query == {"cols": "80", "rows": "24", "command": "top"}


def test_recv_and_wait_return_none_on_timeout(ws_server: FakeShellServer) -> None:
    ws_server.script = silent
    with Shell.open("sb_1", config=config(ws_server)) as shell:
        started = time.monotonic()
        assert shell.recv(timeout=0.2) is None
        assert shell.wait(timeout=0.2) is None
        assert 0.35 < time.monotonic() - started < 3
        assert shell.exit_code is None
    assert ws_server.client_close.get(timeout=5) == (1000, "")  # close() says goodbye normally


def test_a_broken_connection_has_no_exit_code_and_refuses_input(ws_server: FakeShellServer) -> None:
    def fail(server: FakeShellServer, ws: ServerConnection) -> None:
        ws.send(b"partial")
        ws.close(1011, "agent connection lost")

    ws_server.script = fail
    with Shell.open("sb_1", config=config(ws_server)) as shell:
        assert list(shell) == [b"partial"]
        assert shell.exit_code is None
        assert shell.close_code == 1011
        with pytest.raises(ConnectionFailedError, match="agent connection lost"):
            shell.send("more")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (422, "ssh_disabled", SshDisabledError),
        (404, "sandbox_not_found", SandboxNotFoundError),
        (429, "rate_limited", RateLimitedError),
    ],
)
def test_a_refused_upgrade_raises_the_error_of_its_envelope(
    ws_server: FakeShellServer, status: int, code: str, error: type[QboxError]
) -> None:
    ws_server.refuse(status, code, f"refused: {code}")
    with pytest.raises(error) as info:
        Shell.open("sb_1", config=config(ws_server))
    assert info.value.status == status
    assert info.value.message == f"refused: {code}"


def test_a_silent_server_times_out_after_the_request_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the TCP connection, never answers the upgrade
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            Shell.open("sb_1", api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", request_timeout=0.3)
        assert time.monotonic() - started < 3


def test_nobody_listening_is_a_connection_failure() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ConnectionFailedError):
            Shell.open("sb_1", api_key=API_KEY, base_url=f"http://127.0.0.1:{port}")


def test_sandbox_shell_without_websockets_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    http = FakeServer().on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    sb = Sandbox.connect("sb_1", config=http.config())
    monkeypatch.setitem(sys.modules, "websockets", None)
    with pytest.raises(QboxError, match=r"pip install 'qbox\[shell\]'"):
        sb.shell()


# --- async, over the wire -----------------------------------------------------


async def test_async_shell_sends_the_frames_and_reads_output_until_exit(ws_server: FakeShellServer) -> None:
    ws_server.script = talk_then_exit
    async with await AsyncShell.open("sb_1", 100, 30, user="root", config=config(ws_server)) as shell:
        await shell.send("ls\r")
        await shell.send(b"\x04")
        await shell.resize(90, 20)
        output = b"".join([chunk async for chunk in shell])
        assert output == "hello w\u00f6rld".encode()
        assert shell.exit_code == 7
        assert await shell.wait() == 7
    assert ws_server.upgrades[0].path == PREFIX + "/v1/sandboxes/sb_1/shell"
    assert ws_server.upgrades[0].query == {"cols": "100", "rows": "30", "user": "root"}
    assert ws_server.upgrades[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert ws_server.next_frame() == '{"type": "input", "data": "ls\\r"}'
    assert ws_server.next_frame() == b"\x04"
    assert ws_server.next_frame() == '{"type": "resize", "cols": 90, "rows": 20}'


async def test_async_sandbox_shell(ws_server: FakeShellServer) -> None:
    http = FakeServer().on("GET", PREFIX + "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    ws_server.script = talk_then_exit
    sb = await AsyncSandbox.connect("sb_1", config=config(ws_server, transport=httpx.MockTransport(http.handle)))
    try:
        shell = await sb.shell(132, 43)
        for key in "xyz":
            await shell.send(key)
        assert await shell.wait(timeout=5) == 7
        await shell.close()
    finally:
        await sb.close()
    assert ws_server.upgrades[0].query == {"cols": "132", "rows": "43"}


async def test_async_recv_and_wait_time_out(ws_server: FakeShellServer) -> None:
    ws_server.script = silent
    async with await AsyncShell.open("sb_1", config=config(ws_server)) as shell:
        started = time.monotonic()
        assert await shell.recv(timeout=0.2) is None
        assert await shell.wait(timeout=0.2) is None
        assert 0.35 < time.monotonic() - started < 3
    assert ws_server.client_close.get(timeout=5) == (1000, "")


async def test_async_refusal_raises_the_error_of_its_envelope(ws_server: FakeShellServer) -> None:
    ws_server.refuse(422, "ssh_disabled", "the template does not enable ssh")
    with pytest.raises(SshDisabledError, match="the template does not enable ssh"):
        await AsyncShell.open("sb_1", config=config(ws_server))


async def test_async_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(RequestTimeoutError):
            await AsyncShell.open("sb_1", api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", request_timeout=0.3)
