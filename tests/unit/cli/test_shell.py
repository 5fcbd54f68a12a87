"""``qbox sandboxes ssh``: the real CLI in a subprocess, on a real pseudo-terminal (pexpect) or on
pipes, against a real WebSocket server on 127.0.0.1 (tests/unit/sdk/fake_shell.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from websockets.sync.server import ServerConnection

from tests.unit.sdk.fake_shell import FakeShellServer, running_shell_server
from tests.unit.sdk.fakes import API_KEY

QBOX = [sys.executable, "-m", "qbox"]


@pytest.fixture
def ws_server() -> Iterator[FakeShellServer]:
    with running_shell_server() as server:
        yield server


def cli_env(server: FakeShellServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBOX")}
    env.update(QBOX_API_KEY=API_KEY, QBOX_BASE_URL=server.base_url, HOME=str(home), TERM="xterm")
    return env


def terminal(server: FakeShellServer, ws: ServerConnection) -> None:
    """A stand-in remote shell: a prompt, then it reports what it gets; typing ``q`` exits 7."""
    ws.send(b"remote> ")
    for message in ws:
        server.frames.put(message)
        frame = json.loads(message)
        if frame["type"] == "resize":
            ws.send(f"[size {frame['cols']}x{frame['rows']}]".encode())
        elif frame["data"] == "q":
            ws.send(b"bye\r\n")
            ws.close(1000, "exit 7")
            return
        else:
            ws.send(f"[got {frame['data']!r}]".encode())


@pytest.fixture
def spawn(ws_server: FakeShellServer, tmp_path: Path) -> Iterator[pexpect.spawn]:
    """bash on a fresh pseudo-terminal: prints its settings, runs qbox, prints its status and the settings again."""
    ws_server.script = terminal
    qbox = " ".join(QBOX)
    script = f"stty -g; echo START; {qbox} sandboxes ssh sb_1; echo STATUS=$?; stty -g"
    child = pexpect.spawn(
        "bash", ["--norc", "--noprofile", "-c", script], env=cli_env(ws_server, tmp_path),
        dimensions=(30, 100), timeout=15,
    )
    try:
        yield child
    finally:
        child.close(force=True)


def qbox_pid(child: pexpect.spawn) -> int:
    """The qbox process bash started."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("bash started no qbox process")


def settings_before(child: pexpect.spawn) -> str:
    child.expect(r"(\S+)\r\nSTART\r\n")
    return child.match.group(1).decode()


def settings_after(child: pexpect.spawn) -> tuple[int, str]:
    child.expect(r"STATUS=(\d+)\r\n(\S+)\r\n")
    status, settings = child.match.group(1), child.match.group(2)
    child.expect(pexpect.EOF)
    return int(status), settings.decode()


def test_keys_go_through_raw_and_the_exit_status_is_the_remote_one(
    spawn: pexpect.spawn, ws_server: FakeShellServer
) -> None:
    before = settings_before(spawn)
    spawn.expect_exact("remote> ")
    spawn.send("\x03")  # raw mode: Ctrl-C is a key for the sandbox, not SIGINT for qbox
    spawn.expect_exact("[got '\\x03']")
    assert ws_server.next_frame() == '{"type": "input", "data": "\\u0003"}'
    spawn.send("ab")
    spawn.expect_exact("[got 'ab']")
    assert "ab" not in spawn.before.decode()  # no local echo in raw mode
    spawn.send("\u00e9")  # UTF-8 typed, sent as text
    spawn.expect_exact("[got '\u00e9']".encode())
    spawn.send("q")
    spawn.expect_exact("bye\r\n")
    status, after = settings_after(spawn)
    assert status == 7
    assert after == before
    upgrade = ws_server.upgrades[0]
    assert upgrade.path.endswith("/v1/sandboxes/sb_1/shell")
    assert upgrade.query == {"cols": "100", "rows": "30"}  # this terminal's size
    assert upgrade.headers["authorization"] == f"Bearer {API_KEY}"


def test_a_window_size_change_is_sent_as_a_resize(spawn: pexpect.spawn, ws_server: FakeShellServer) -> None:
    settings_before(spawn)
    spawn.expect_exact("remote> ")
    spawn.setwinsize(40, 120)  # the kernel signals SIGWINCH to the foreground qbox
    spawn.expect_exact("[size 120x40]")
    assert ws_server.next_json() == {"type": "resize", "cols": 120, "rows": 40}
    spawn.send("q")
    assert settings_after(spawn)[0] == 7


def test_the_terminal_is_restored_when_qbox_is_terminated(spawn: pexpect.spawn, ws_server: FakeShellServer) -> None:
    before = settings_before(spawn)
    spawn.expect_exact("remote> ")
    os.kill(qbox_pid(spawn), signal.SIGTERM)
    status, after = settings_after(spawn)
    assert status == 128 + signal.SIGTERM
    assert after == before
    assert ws_server.client_close.get(timeout=5) == (1000, "")  # the shell was hung up cleanly


def test_cols_and_rows_override_the_terminal_size(ws_server: FakeShellServer, tmp_path: Path) -> None:
    ws_server.script = terminal
    child = pexpect.spawn(
        QBOX[0], [*QBOX[1:], "sandboxes", "ssh", "sb_1", "--cols", "132", "--rows", "43", "--user", "root"],
        env=cli_env(ws_server, tmp_path), timeout=15,
    )
    try:
        child.expect_exact("remote> ")
        child.send("q")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 7
    finally:
        child.close(force=True)
    assert ws_server.upgrades[0].query == {"cols": "132", "rows": "43", "user": "root"}


# --- without a terminal -------------------------------------------------------


def run_command(
    server: FakeShellServer, home: Path, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*QBOX, "sandboxes", "ssh", "sb_1", *args],
        input=stdin, capture_output=True, env=cli_env(server, home), timeout=30, check=False,
    )


def test_a_command_without_a_terminal_streams_its_output_and_status(
    ws_server: FakeShellServer, tmp_path: Path
) -> None:
    def cat(server: FakeShellServer, ws: ServerConnection) -> None:
        typed = ""
        while "\x04" not in typed:  # stdin's end arrives as Ctrl-D
            message = ws.recv()
            server.frames.put(message)
            typed += json.loads(message)["data"]
        ws.send(typed.replace("\x04", "").replace("\n", "\r\n").encode())
        ws.send(b"done\r\n")
        ws.close(1000, "exit 3")

    ws_server.script = cat
    done = run_command(ws_server, tmp_path, "-c", "cat", stdin=b"line 1\nline 2\n")
    assert done.returncode == 3, done.stderr
    assert done.stdout == b"line 1\r\nline 2\r\ndone\r\n"
    assert ws_server.upgrades[0].query == {"cols": "80", "rows": "24", "command": "cat"}


def test_a_broken_connection_exits_1_and_says_why(ws_server: FakeShellServer, tmp_path: Path) -> None:
    def fail(server: FakeShellServer, ws: ServerConnection) -> None:
        ws.send(b"partial")
        ws.close(1011, "agent connection lost")

    ws_server.script = fail
    done = run_command(ws_server, tmp_path, "-c", "make", "--cols", "100", "--rows", "10")
    assert done.returncode == 1
    assert done.stdout == b"partial"
    assert b"agent connection lost" in done.stderr
    assert ws_server.upgrades[0].query == {"cols": "100", "rows": "10", "command": "make"}


def test_a_refusal_is_reported_with_its_exit_code(ws_server: FakeShellServer, tmp_path: Path) -> None:
    ws_server.refuse(422, "ssh_disabled", "template python does not enable ssh")
    done = run_command(ws_server, tmp_path, "-c", "ls")
    assert done.returncode == 6  # conflict: the feature is off
    error = json.loads(done.stdout)["error"]  # not a terminal: errors come as JSON
    assert error["code"] == "ssh_disabled"
    assert error["message"] == "template python does not enable ssh"


def test_an_interactive_shell_needs_a_terminal(ws_server: FakeShellServer, tmp_path: Path) -> None:
    done = run_command(ws_server, tmp_path)
    assert done.returncode == 2
    assert b"-c CMD" in done.stderr
    assert ws_server.upgrades == []
