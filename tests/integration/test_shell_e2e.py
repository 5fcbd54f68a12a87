"""The interactive shell against a real `qbox up`: a real PTY from crun (and gVisor), through the
agent and the control plane, driven by a real WebSocket client (WIRE_PROTOCOL §6)."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.integration.shell_term import Term, open_socket
from tests.qbox_process import QboxUp

pytestmark = pytest.mark.integration


def spawn(api: httpx.Client, template: str = "tpl_python") -> dict[str, Any]:
    r = api.post("/v1/sandboxes?wait=true&waitTimeoutSec=60", json={"templateId": template})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "running", r.text
    return r.json()  # type: ignore[no-any-return]


def refusal(excinfo: pytest.ExceptionInfo[InvalidStatus]) -> tuple[int, str]:
    response = excinfo.value.response
    return response.status_code, json.loads(response.body or b"{}")["error"]["code"]


@pytest.fixture
def member(qbox: QboxUp, api: httpx.Client) -> Iterator[dict[str, str]]:
    """Another user of this qbox, with a password and an API key."""
    email, password = f"m-{secrets.token_hex(4)}@example.test", secrets.token_urlsafe(16)
    r = api.post("/v1/users", json={"email": email, "role": "member", "password": password})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    r = api.post("/v1/api-keys", json={"name": "shell", "scopes": ["*"], "userId": user_id})
    assert r.status_code == 201, r.text
    yield {"email": email, "password": password, "key": r.json()["secret"], "keyId": r.json()["key"]["id"],
           "userId": user_id}
    api.post(f"/v1/users/{user_id}/disable")


def test_a_terminal_as_the_sandbox_user(qbox: QboxUp, sandbox: dict[str, Any]) -> None:
    with Term.open(qbox.base_url, sandbox["id"], qbox.api_key) as term:
        assert re.fullmatch(r"/dev/pts/\d+", term.run("tty")), term.text
        assert term.run("test -t 0 && test -t 1 && echo both") == "both"
        assert term.run("id -un; echo $TERM $HOME $SHELL") .split() == [
            "user", "xterm-256color", "/home/user", "/bin/bash"]
        assert term.run("pwd") == "/home/user"
        assert term.run("echo $((6*7))") == "42"  # the echo round trip
        assert term.largest_frame <= 64 * 1024


def test_the_initial_size_and_resizes(qbox: QboxUp, sandbox: dict[str, Any]) -> None:
    with Term.open(qbox.base_url, sandbox["id"], qbox.api_key, cols=100, rows=30) as term:
        assert term.run("stty size") == "30 100"
        term.resize(132, 50)
        assert term.run("stty size") == "50 132"
        # A full-screen program finds its terminal (terminfo for TERM, the size, the screen).
        curses = ("python3 -c 'import curses; w = curses.initscr(); y, x = w.getmaxyx(); "
                  "curses.endwin(); print(\"screen\", y, x, curses.tigetstr(\"clear\") is not None)'")
        assert "screen 50 132 True" in term.run(curses)
        # The shell itself hears about it (SIGWINCH), as full-screen programs do.
        term.resize(90, 20)
        assert term.run("sleep 0.2; echo $COLUMNS $LINES") == "90 20"


def test_ctrl_c_interrupts_the_foreground_job_and_the_shell_goes_on(qbox: QboxUp,
                                                                   sandbox: dict[str, Any]) -> None:
    with Term.open(qbox.base_url, sandbox["id"], qbox.api_key) as term:
        term.run("true")  # the prompt is up
        term.type('sleep 100; echo not-"interrupted"\r')
        time.sleep(0.5)
        started = time.monotonic()
        term.type("\x03")
        term.expect(r"\^C", timeout=10)
        assert term.run("echo $((40+2))", timeout=10) == "42"
        assert time.monotonic() - started < 10
        assert "not-interrupted" not in term.text


def test_exit_closes_the_socket_with_the_status(qbox: QboxUp, sandbox: dict[str, Any]) -> None:
    with Term.open(qbox.base_url, sandbox["id"], qbox.api_key) as term:
        term.run("true")
        term.type("echo last-words; exit 3\r")
        assert term.wait_closed() == (1000, "exit 3")
        assert "last-words" in term.text  # output before the exit is delivered first


def test_a_command_instead_of_the_login_shell(qbox: QboxUp, sandbox: dict[str, Any]) -> None:
    with Term.open(qbox.base_url, sandbox["id"], qbox.api_key, command="tty; stty size; exit 7",
                   cols=120, rows=40) as term:
        assert term.wait_closed() == (1000, "exit 7")
        assert re.search(r"/dev/pts/\d+\r?\n40 120", term.text), term.text


def test_handshake_refusals(qbox: QboxUp, sandbox: dict[str, Any], member: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as no_token:
        open_socket(qbox.base_url, sandbox["id"])
    assert refusal(no_token) == (401, "unauthenticated")
    with pytest.raises(InvalidStatus) as wrong_token:
        open_socket(qbox.base_url, sandbox["id"], key="qbox_" + "x" * 40)
    assert refusal(wrong_token) == (401, "unauthenticated")
    with pytest.raises(InvalidStatus) as strangers:  # someone else's sandbox
        open_socket(qbox.base_url, sandbox["id"], key=member["key"])
    assert refusal(strangers) == (404, "sandbox_not_found")
    with pytest.raises(InvalidStatus) as unknown:
        open_socket(qbox.base_url, "sb_" + "0" * 26, key=qbox.api_key)
    assert refusal(unknown) == (404, "sandbox_not_found")
    with pytest.raises(InvalidStatus) as bad_size:
        open_socket(qbox.base_url, sandbox["id"], key=qbox.api_key, cols=0)
    assert refusal(bad_size) == (400, "validation_error")


def test_the_dashboard_cookie_only_from_our_own_origin(qbox: QboxUp, member: dict[str, str]) -> None:
    with qbox.client(member["key"]) as mine:
        sb = spawn(mine)
        try:
            login = httpx.post(f"{qbox.base_url}/auth/login",
                               json={"email": member["email"], "password": member["password"]})
            assert login.status_code == 200, login.text
            cookie = f"qbox_session={login.cookies['qbox_session']}"
            for origin in ("https://evil.example", None):
                headers = {"Cookie": cookie} | ({"Origin": origin} if origin else {})
                with pytest.raises(InvalidStatus) as refused:
                    open_socket(qbox.base_url, sb["id"], headers=headers)
                assert refused.value.response.status_code in (401, 403), origin
            with Term(open_socket(qbox.base_url, sb["id"], headers={"Cookie": cookie,
                                                                    "Origin": qbox.base_url})) as term:
                assert term.run("id -un") == "user"
        finally:
            mine.delete(f"/v1/sandboxes/{sb['id']}")


def _sandbox_processes(api: httpx.Client, sandbox_id: str) -> list[str]:
    r = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "ps", "args": ["-eo", "args="]})
    assert r.status_code == 200 and r.json()["exitCode"] == 0, r.text
    return [line.strip() for line in r.json()["stdout"].splitlines()]


def test_closing_the_socket_kills_everything_the_shell_started(qbox: QboxUp, api: httpx.Client,
                                                               sandbox: dict[str, Any]) -> None:
    term = Term.open(qbox.base_url, sandbox["id"], qbox.api_key)
    term.run("sleep 1001 & nohup sleep 1002 >/dev/null 2>&1 & (sleep 1003 &) ; true")
    assert {"sleep 1001", "sleep 1002", "sleep 1003"} <= set(_sandbox_processes(api, sandbox["id"]))
    term.type("sleep 1004\r")  # and one in the foreground
    term.ws.close()
    deadline = time.monotonic() + 20
    while True:
        left = [p for p in _sandbox_processes(api, sandbox["id"]) if p.startswith(("sleep 100", "-bash", "bash"))]
        if not left:
            break
        assert time.monotonic() < deadline, f"still there after the socket closed: {left}"
        time.sleep(0.5)


def test_several_shells_at_once_are_independent(qbox: QboxUp, sandbox: dict[str, Any]) -> None:
    with Term.open(qbox.base_url, sandbox["id"], qbox.api_key) as one, \
            Term.open(qbox.base_url, sandbox["id"], qbox.api_key) as two:
        one.run("export WHO=one; cd /tmp")
        two.run("export WHO=two")
        assert (one.run("echo $WHO $PWD"), two.run("echo $WHO $PWD")) == ("one /tmp", "two /home/user")
        assert one.run("tty") != two.run("tty")
        one.type("exit 0\r")
        assert one.wait_closed() == (1000, "exit 0")
        assert two.run("echo still") == "still"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _agent_pid(qbox: QboxUp) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
            if ppid == qbox.process.pid and b"agent" in argv:
                return int(entry.name)
    raise AssertionError("the host agent of qbox up was not found")


def test_yes_with_a_slow_reader_keeps_memory_bounded(qbox: QboxUp, sandbox: dict[str, Any]) -> None:
    agent = _agent_pid(qbox)
    with Term.open(qbox.base_url, sandbox["id"], qbox.api_key) as term:
        term.run("true")
        before = {"control plane": _rss_kib(qbox.process.pid), "agent": _rss_kib(agent)}
        term.type("yes\r")
        term.expect("y\r\ny\r\ny")
        time.sleep(10)  # reads nothing: everything upstream must wait, not pile up
        after_stall = {"control plane": _rss_kib(qbox.process.pid), "agent": _rss_kib(agent)}
        # Then a slow reader: a frame now and then; output keeps coming at its pace.
        got = 0
        for _ in range(30):
            got += term._take(1.0)
            time.sleep(0.05)
        after_slow = {"control plane": _rss_kib(qbox.process.pid), "agent": _rss_kib(agent)}
        assert got == 30
        for name, kib in before.items():
            assert after_stall[name] - kib < 24 * 1024, (name, before, after_stall)
            assert after_slow[name] - kib < 24 * 1024, (name, before, after_slow)
        assert term.largest_frame <= 64 * 1024
        term.type("\x03")
        # What the pipes held drains (tens of MB of socket buffers), then the echoed ^C; input
        # typed before the interrupt is processed is flushed by it, as on any terminal.
        term.expect(r"\^C", timeout=120)
        time.sleep(0.5)
        assert term.run("echo $((2*21))", timeout=30) == "42"


def test_deleting_the_sandbox_ends_the_shell(qbox: QboxUp, api: httpx.Client) -> None:
    sb = spawn(api)
    term = Term.open(qbox.base_url, sb["id"], qbox.api_key)
    try:
        term.run("true")
        assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code in (200, 204)
        code, _reason = term.wait_closed(timeout=30)
        assert code is not None
    finally:
        term.ws.close()
        api.delete(f"/v1/sandboxes/{sb['id']}")


def test_revoking_the_key_ends_its_shells(qbox: QboxUp, api: httpx.Client, sandbox: dict[str, Any]) -> None:
    r = api.post("/v1/api-keys", json={"name": "short-lived", "scopes": ["*"]})
    assert r.status_code == 201, r.text
    secret, key_id = r.json()["secret"], r.json()["key"]["id"]
    with Term.open(qbox.base_url, sandbox["id"], secret) as term:
        term.run("true")
        assert api.post(f"/v1/api-keys/{key_id}/revoke").status_code == 200
        code, reason = term.wait_closed(timeout=30)
        assert code == 1008 and "revoked" in (reason or ""), (code, reason)


def test_under_gvisor_too(qbox: QboxUp, api: httpx.Client) -> None:
    sb = spawn(api, "tpl_python-gvisor")
    try:
        with Term.open(qbox.base_url, sb["id"], qbox.api_key, cols=101, rows=31) as term:
            # gVisor imports the host's PTY as the terminal: a terminal (`test -t`), but one
            # without a /dev/pts name inside the sandbox, so `tty` cannot name it.
            assert term.run("test -t 0 && test -t 1 && echo both") == "both"
            assert term.run("id -un") == "user"
            assert term.run("stty size") == "31 101"
            term.resize(120, 33)
            assert term.run("stty size") == "33 120"
            term.type("sleep 100\r")
            time.sleep(0.5)
            term.type("\x03")
            term.expect(r"\^C", timeout=10)
            assert term.run("echo $((1+1))", timeout=10) == "2"
            term.type("exit 5\r")
            assert term.wait_closed() == (1000, "exit 5")
    finally:
        api.delete(f"/v1/sandboxes/{sb['id']}")


def test_the_cli_through_a_real_terminal(qbox: QboxUp, sandbox: dict[str, Any]) -> None:
    import pexpect

    env = {**os.environ, "QBOX_BASE_URL": qbox.base_url, "QBOX_API_KEY": qbox.api_key, "TERM": "xterm"}
    qbox_cli = str(Path(sys.executable).with_name("qbox"))
    child = pexpect.spawn(qbox_cli, ["sandboxes", "ssh", sandbox["id"]], env=env, encoding="utf-8",
                          timeout=30, dimensions=(28, 96))
    try:
        child.sendline("echo cli-$((2+3)); stty size")
        child.expect(r"cli-5\r\n28 96")
        child.setwinsize(40, 140)
        child.sendline("sleep 0.3; stty size")
        child.expect(r"40 140")
        child.sendline("exit 4")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 4, child.before
    one_shot = pexpect.spawn(qbox_cli, ["sandboxes", "ssh", sandbox["id"], "-c", "tty; exit 6"], env=env,
                             encoding="utf-8", timeout=30)
    try:
        one_shot.expect(r"/dev/pts/\d+")
        one_shot.expect(pexpect.EOF)
    finally:
        one_shot.close(force=True)
    assert one_shot.exitstatus == 6
