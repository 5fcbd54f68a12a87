"""The shell route and its parts, over the fake runtime (a real host PTY, no root needed).

The route is driven through Starlette's TestClient (refusals arrive as
``WebSocketDenialResponse``); the PTY session is also driven directly, to
show that output nobody asks for stalls the shell rather than the agent.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import QueryParams
from starlette.testclient import TestClient, WebSocketDenialResponse, WebSocketTestSession

from qbox.agent.app import create_app
from qbox.agent.openat2 import RootDir
from qbox.agent.runtime.base import ConsoleSize, ProcessSpec
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from qbox.agent.shell import CHUNK_BYTES, ShellSession, login_shell, passwd_shell, shell_argv
from qbox.core.shell_protocol import BadFrame, Input, Resize, parse_frame, parse_params
from qbox.agent.spec import oci_process
from qbox.core.errors import ValidationError
from qbox.core.ids import new_sandbox_id
from tests.unit.agent.fakes import FakeImageStore

SECRET = "shell-host-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


# --- pure parts ----------------------------------------------------------------

def test_a_terminal_process_asks_the_runtime_for_a_sized_console() -> None:
    spec = ProcessSpec(["/bin/bash", "-l"], {}, "/", 1000, 1000, terminal=True,
                       console_size=ConsoleSize(cols=120, rows=40))
    document = oci_process(spec)
    assert document["terminal"] is True
    assert document["consoleSize"] == {"height": 40, "width": 120}
    plain = oci_process(ProcessSpec(["true"], {}, "/", 0, 0))
    assert plain["terminal"] is False and "consoleSize" not in plain


def test_params_default_to_80x24_and_bound_each_side() -> None:
    params = parse_params(QueryParams(""))
    assert (params.size, params.command, params.user) == (ConsoleSize(80, 24), None, None)
    params = parse_params(QueryParams("cols=1000&rows=1&command=ls+-l&user=root"))
    assert (params.size, params.command, params.user) == (ConsoleSize(1000, 1), "ls -l", "root")
    for query, field in [("cols=0", "cols"), ("rows=1001", "rows"), ("cols=abc", "cols"),
                         ("rows=-3", "rows"), ("command=", "command")]:
        with pytest.raises(ValidationError) as caught:
            parse_params(QueryParams(query))
        assert field in caught.value.field_errors


def _text(text: str) -> dict[str, Any]:
    return {"type": "websocket.receive", "text": text}


def test_frames_are_input_or_resize() -> None:
    assert parse_frame({"type": "websocket.receive", "bytes": b"\x03"}) == Input(b"\x03")
    assert parse_frame(_text('{"type":"input","data":"ls\\n"}')) == Input(b"ls\n")
    assert parse_frame(_text('{"type":"resize","cols":100,"rows":30}')) == \
        Resize(ConsoleSize(100, 30))
    assert parse_frame({"type": "websocket.disconnect", "code": 1000}) is None
    for bad in ["not json", "[1]", '{"type":"input","data":5}', '{"type":"resize","cols":0,"rows":5}',
                '{"type":"resize","cols":true,"rows":5}', '{"type":"bell"}']:
        with pytest.raises(BadFrame):
            parse_frame(_text(bad))


def test_the_login_shell_comes_from_passwd_if_the_sandbox_has_it(tmp_path: Path) -> None:
    passwd = "root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/usr/bin/zsh\n" \
             "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
    assert passwd_shell(passwd, "user") == "/usr/bin/zsh"
    assert passwd_shell(passwd, "nobody") is None
    assert passwd_shell(passwd, "ghost") is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(passwd)
    (tmp_path / "bin").mkdir()
    with RootDir(tmp_path) as root:
        assert login_shell(root, "user") == "/bin/sh"  # nothing there: the last fallback
        (tmp_path / "bin" / "sh").write_text("")
        (tmp_path / "bin" / "bash").write_text("")
        assert login_shell(root, "user") == "/bin/bash"  # no zsh in this sandbox
        (tmp_path / "usr" / "bin").mkdir(parents=True)
        (tmp_path / "usr" / "bin" / "zsh").write_text("")
        assert login_shell(root, "user") == "/usr/bin/zsh"
        assert login_shell(root, "nobody") == "/bin/bash"
    assert shell_argv("/bin/bash", None) == ["/bin/bash", "-l"]
    assert shell_argv("/bin/bash", "make test") == ["/bin/bash", "-lc", "make test"]


# --- the route -------------------------------------------------------------------

@dataclass
class ShellAgent:
    client: TestClient
    runtime: FakeRuntime
    rootfs: Path
    sandbox: str

    def connect(self, query: str = "", sandbox: str | None = None,
                headers: dict[str, str] | None = None) -> WebSocketTestSession:
        return self.client.websocket_connect(
            f"/internal/v1/sandboxes/{sandbox or self.sandbox}/shell?{query}",
            headers=AUTH if headers is None else headers)


@pytest.fixture
def shell_agent(tmp_path: Path) -> Iterator[ShellAgent]:
    settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                             prepare_host=False, kill_grace_seconds=0.5)
    runtime = FakeRuntime()
    store = FakeImageStore(tmp_path / "images")
    digest = store.add("base")
    app = create_app(settings, runtime=runtime, store=store)
    with TestClient(app, base_url="http://agent") as client:
        sandbox = new_sandbox_id()
        r = client.post("/internal/v1/sandboxes", headers=AUTH, json={
            "id": sandbox, "imageDigest": digest, "vcpus": 1, "memoryMb": 256,
            "envs": {"GREETING": "hi"}})
        assert r.status_code == 201, r.text
        rootfs = app.state.agent.sandboxes.get(sandbox).rootfs
        yield ShellAgent(client, runtime, rootfs, sandbox)


def _denied(agent: ShellAgent, query: str = "", sandbox: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    with pytest.raises(WebSocketDenialResponse) as caught:
        with agent.connect(query, sandbox, headers):
            pass
    return caught.value.status_code, caught.value.json()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {SECRET}"}])
def test_a_wrong_secret_is_refused_before_the_upgrade(shell_agent: ShellAgent,
                                                      headers: dict[str, str]) -> None:
    status, body = _denied(shell_agent, headers=headers)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    assert not shell_agent.runtime.execs


def test_refusals_carry_the_error_envelope(shell_agent: ShellAgent) -> None:
    status, body = _denied(shell_agent, sandbox="sb_doesnotexist0")
    assert (status, body["error"]["code"]) == (404, "sandbox_not_found")
    status, body = _denied(shell_agent, "cols=0&rows=24")
    assert (status, body["error"]["code"]) == (400, "validation_error")
    assert "cols" in body["error"]["details"]["fieldErrors"]
    status, body = _denied(shell_agent, "user=ghost")
    assert (status, body["error"]["code"]) == (400, "validation_error")
    assert not shell_agent.runtime.execs


def test_a_stopped_sandbox_is_409(shell_agent: ShellAgent) -> None:
    shell_agent.client.portal.call(shell_agent.runtime.kill, shell_agent.sandbox)  # type: ignore[union-attr]
    for _ in range(100):
        if shell_agent.client.get(f"/internal/v1/sandboxes/{shell_agent.sandbox}",
                                  headers=AUTH).json()["status"] == "stopped":
            break
        time.sleep(0.01)
    status, body = _denied(shell_agent)
    assert (status, body["error"]["code"]) == (409, "sandbox_not_active")


def _until_closed(ws: WebSocketTestSession) -> tuple[bytes, int, str]:
    output = b""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return output, message["code"], message.get("reason", "")
        assert len(message["bytes"]) <= CHUNK_BYTES
        output += message["bytes"]


def _expect(ws: WebSocketTestSession, pattern: str) -> str:
    output = ""
    while not re.search(pattern, output):
        message = ws.receive()
        assert message["type"] == "websocket.send", (message, output)
        output += message["bytes"].decode(errors="replace")
    return output


def test_a_command_on_the_terminal_ends_with_its_exit_code(shell_agent: ShellAgent) -> None:
    with shell_agent.connect("cols=100&rows=30&command=stty+size%3B+echo+$GREETING+$TERM%3B+exit+3") as ws:
        output, code, reason = _until_closed(ws)
    assert (code, reason) == (1000, "exit 3")
    assert b"30 100" in output and b"hi xterm-256color" in output
    _, process = shell_agent.runtime.execs[-1]
    assert process.terminal and process.console_size == ConsoleSize(100, 30)
    assert process.args[1:] == ["-lc", "stty size; echo $GREETING $TERM; exit 3"]
    assert process.uid == 1000 and process.env["SHELL"] == process.args[0]


def test_input_resize_and_the_end_of_an_interactive_shell(shell_agent: ShellAgent) -> None:
    with shell_agent.connect("cols=90&rows=20") as ws:
        ws.send_text('{"type":"input","data":"echo A-$((1+1)) $(stty size)\\n"}')
        _expect(ws, r"A-2 20 90")
        ws.send_text('{"type":"resize","cols":132,"rows":43}')
        ws.send_bytes(b"echo B-$((2+2)) $(stty size)\n")
        _expect(ws, r"B-4 43 132")
        ws.send_bytes(b"echo last-$((3+3)); exit 5\n")
        output, code, reason = _until_closed(ws)
    assert (code, reason) == (1000, "exit 5")
    assert b"last-6" in output


def test_a_malformed_frame_closes_with_1007(shell_agent: ShellAgent) -> None:
    with shell_agent.connect() as ws:
        ws.send_text("{nope")
        _, code, reason = _until_closed(ws)
    assert code == 1007 and "JSON" in reason


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_closing_the_websocket_ends_the_shell_and_its_jobs(shell_agent: ShellAgent) -> None:
    with shell_agent.connect() as ws:
        ws.send_bytes(b"sleep 1000 & echo JOB-$((1+1))-$!\n")
        job = int(re.findall(r"JOB-2-(\d+)", _expect(ws, r"JOB-2-\d+"))[0])
        assert not _gone(job)
        # The client hangs up (inside the block: leaving it would cancel the app at once).
        ws.close(1000)
        deadline = time.monotonic() + 5
        while not _gone(job) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _gone(job)


# --- the session -----------------------------------------------------------------

def _bytes_written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


async def test_output_nobody_reads_stalls_the_shell(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    (tmp_path / "config.json").write_text(f'{{"root": {{"path": "{tmp_path}"}}}}')
    await runtime.run("sb_stall", tmp_path)
    handle = await runtime.exec("sb_stall", ProcessSpec(
        ["yes"], {"PATH": os.environ["PATH"]}, "/", os.getuid(), os.getgid(), terminal=True,
        console_size=ConsoleSize(80, 24)))
    session = ShellSession(handle, kill_grace=0.5)
    try:
        first = await session.read()
        assert first.startswith(b"y\r\n") and len(first) <= CHUNK_BYTES
        await asyncio.sleep(0.5)  # the PTY's buffer fills, then yes blocks in write()
        before = _bytes_written(handle.pid)
        await asyncio.sleep(1)
        assert _bytes_written(handle.pid) == before
        for _ in range(20):
            assert len(await session.read()) <= CHUNK_BYTES
        await asyncio.sleep(0.2)
        assert _bytes_written(handle.pid) > before  # reading lets it go on
    finally:
        await session.terminate()
        session.close()
    status = await asyncio.wait_for(session.wait(), 5)
    assert status.signal in (1, 9)


def test_a_shell_that_cannot_start_is_503_ssh_unavailable(shell_agent: ShellAgent) -> None:
    # The sandbox names a shell that the (fake) runtime cannot run.
    (shell_agent.rootfs / "etc").mkdir(exist_ok=True)
    (shell_agent.rootfs / "etc" / "passwd").write_text(
        "user:x:1000:1000::/home/user:/opt/qbox-missing/zsh\n")
    (shell_agent.rootfs / "opt" / "qbox-missing").mkdir(parents=True)
    (shell_agent.rootfs / "opt" / "qbox-missing" / "zsh").write_text("")
    status, body = _denied(shell_agent)
    assert (status, body["error"]["code"]) == (503, "ssh_unavailable")
    assert "/opt/qbox-missing/zsh" in body["error"]["message"]


def test_a_shell_that_let_go_of_its_terminal_still_ends_with_the_client(
        shell_agent: ShellAgent) -> None:
    with shell_agent.connect("command=exec+%3C/dev/null+%3E/dev/null+2%3E%261%3B+sleep+1000") as ws:
        container = shell_agent.runtime._containers[shell_agent.sandbox]
        shell = container.processes[-1].pid
        time.sleep(0.3)  # its output has ended (EIO), it has not exited
        assert not _gone(shell)
        ws.close(1000)
        deadline = time.monotonic() + 5
        while not _gone(shell) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _gone(shell)


async def test_a_flood_goes_out_in_frames_of_many_buffers_and_an_echo_at_once(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    (tmp_path / "config.json").write_text(f'{{"root": {{"path": "{tmp_path}"}}}}')
    await runtime.run("sb_flood", tmp_path)
    handle = await runtime.exec("sb_flood", ProcessSpec(
        ["sh", "-c", "read line; echo got-$line; cat /dev/zero | tr '\\0' x"], {"PATH": os.environ["PATH"]},
        "/", os.getuid(), os.getgid(), terminal=True, console_size=ConsoleSize(80, 24)))
    session = ShellSession(handle, kill_grace=0.5)
    try:
        await session.write(b"hi\r")
        echoed = b""
        while b"got-hi" not in echoed:
            echoed += await session.read()  # short reads: no waiting for more
        # One read of the terminal gives about 4 KiB (the line discipline's buffer, refilled
        # by a kernel worker): a frame holds several once they are buffered.
        sizes = []
        for _ in range(5):
            await asyncio.sleep(0.3)  # unread: the terminal's buffers fill up
            sizes.append(len(await session.read()))
        assert max(sizes) > 2 * 4096 and max(sizes) <= CHUNK_BYTES, sizes
    finally:
        await session.terminate()
        session.close()
