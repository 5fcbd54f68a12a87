"""sandbox.commands: start, poll status, read cumulative logs, time out, background handles."""

from __future__ import annotations

import pytest

from qbox import (
    CommandExitError,
    CommandHandle,
    CommandOutput,
    CommandResult,
    CommandTimeoutError,
    Sandbox,
)
from qbox.sdk._command_ops import POLL_MAX
from tests.unit.sdk.fakes import FakeClock, FakeServer, error, reply, sandbox

CMDS = "/v1/sandboxes/sb_1/commands"
PROC = CMDS + "/7"
LOGS = PROC + "/logs"
STARTED = reply(200, {"pid": 7, "startedAt": "2025-01-02T03:04:05.000000Z"})
ALIVE = reply(200, {"pid": 7, "alive": True, "exitCode": 0, "signal": 0})


def exited(code: int = 0, signal: int = 0) -> object:
    return reply(200, {"pid": 7, "alive": False, "exitCode": code, "signal": signal})


def connect(server: FakeServer) -> tuple[Sandbox, FakeClock]:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    config = server.config()
    assert isinstance(config.clock, FakeClock)
    return Sandbox.connect("sb_1", config=config), config.clock


def test_run_goes_through_the_shell_and_polls(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, ALIVE, ALIVE, ALIVE, exited(0))
    server.on("GET", LOGS, reply(200, {"stdout": "hi\n", "stderr": ""}))
    sb, clock = connect(server)
    result = sb.commands.run("echo hi")
    assert result == CommandResult(exit_code=0, stdout="hi\n", stderr="")
    assert server.last("POST", CMDS).body == {"cmd": "/bin/sh", "args": ["-c", "echo hi"]}
    assert server.targets[1:] == [f"POST {CMDS}"] + [f"GET {PROC}"] * 4 + [f"GET {LOGS}"]
    assert clock.sleeps == pytest.approx([0.05, 0.075, 0.1125])


def test_poll_interval_is_capped(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, *([ALIVE] * 10), exited(0))
    server.on("GET", LOGS, reply(200, {"stdout": "", "stderr": ""}))
    sb, clock = connect(server)
    sb.commands.run("sleep 1")
    assert max(clock.sleeps) == POLL_MAX
    assert clock.sleeps[-1] == POLL_MAX


def test_run_argv_sends_argv_and_options(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, exited(0))
    server.on("GET", LOGS, reply(200, {"stdout": "", "stderr": ""}))
    sb, _ = connect(server)
    sb.commands.run_argv(["ls", "-la", "a b"], cwd="/srv", envs={"K": "v"}, user="app")
    assert server.last("POST", CMDS).body == {
        "cmd": "ls",
        "args": ["-la", "a b"],
        "cwd": "/srv",
        "env": {"K": "v"},
        "user": "app",
    }


def test_non_zero_exit_raises_unless_told_not_to(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, exited(2))
    server.on("GET", LOGS, reply(200, {"stdout": "partial", "stderr": "boom\n"}))
    sb, _ = connect(server)
    with pytest.raises(CommandExitError) as info:
        sb.commands.run("false")
    assert (info.value.exit_code, info.value.stdout, info.value.stderr) == (2, "partial", "boom\n")
    assert "boom" in info.value.message
    result = sb.commands.run("false", raise_on_error=False)
    assert result.exit_code == 2


def test_killed_by_a_signal_is_not_success(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, exited(0, signal=9))
    server.on("GET", LOGS, reply(200, {}))
    sb, _ = connect(server)
    assert sb.commands.run("x", raise_on_error=False).exit_code == 137


def test_timeout_kills_with_signal_9(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, ALIVE)
    server.on("DELETE", PROC, reply(204))
    sb, clock = connect(server)
    with pytest.raises(CommandTimeoutError) as info:
        sb.commands.run("sleep 100", timeout=2)
    assert server.last("DELETE", PROC).params == {"signal": "9"}
    assert info.value.details["pid"] == 7
    assert clock.time == pytest.approx(1002.0)  # waited exactly the timeout, not more


def test_timeout_still_reported_when_the_process_is_gone(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, ALIVE)
    server.on("DELETE", PROC, error(404, "not_found"))
    sb, _ = connect(server)
    with pytest.raises(CommandTimeoutError):
        sb.commands.run("sleep 100", timeout=1)


def test_callbacks_receive_output_as_it_grows(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on(
        "GET",
        LOGS,
        reply(200, {"stdout": "a", "stderr": ""}),
        reply(200, {"stdout": "ab", "stderr": "x"}),
        reply(200, {"stdout": "abc", "stderr": "x"}),
    )
    server.on("GET", PROC, ALIVE, exited(0))
    sb, _ = connect(server)
    out: list[str] = []
    err: list[str] = []
    result = sb.commands.run("prog", on_stdout=out.append, on_stderr=err.append)
    assert out == ["a", "b", "c"] and err == ["x"]
    assert result == CommandResult(0, "abc", "x")


def test_background_returns_a_handle(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", PROC, ALIVE, exited(1))
    server.on("GET", LOGS, reply(200, {"stdout": "log", "stderr": ""}))
    server.on("DELETE", PROC, reply(204))
    sb, _ = connect(server)
    handle = sb.commands.run("server", background=True)
    assert isinstance(handle, CommandHandle) and handle.pid == 7
    assert server.targets[-1] == f"POST {CMDS}"  # nothing polled yet
    assert handle.status().alive
    assert handle.logs() == ("log", "")
    assert handle.logs().stdout == "log"
    assert handle.kill() is True
    assert server.last("DELETE", PROC).params == {"signal": "15"}
    assert handle.wait(raise_on_error=False).exit_code == 1


def test_handle_iteration_yields_chunks_until_exit(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on(
        "GET",
        LOGS,
        reply(200, {"stdout": "1\n", "stderr": ""}),
        reply(200, {"stdout": "1\n2\n", "stderr": ""}),
        reply(200, {"stdout": "1\n2\n3\n", "stderr": "done"}),
    )
    server.on("GET", PROC, ALIVE, exited(0))
    sb, _ = connect(server)
    handle = sb.commands.run_argv(["count"], background=True)
    assert list(handle) == [
        CommandOutput("stdout", "1\n"),
        CommandOutput("stdout", "2\n"),
        CommandOutput("stdout", "3\n"),
        CommandOutput("stderr", "done"),
    ]


def test_list_kill_connect(server: FakeServer) -> None:
    rows = [
        {
            "pid": 7,
            "command": ["sleep", "9"],
            "startedAt": "2025-01-02T03:04:05.000000Z",
            "alive": True,
            "exitCode": 0,
        }
    ]
    server.on("GET", CMDS, reply(200, rows))
    server.on("DELETE", CMDS + "/8", error(404, "not_found"))
    sb, _ = connect(server)
    (process,) = sb.commands.list()
    assert (process.pid, process.command, process.alive) == (7, ["sleep", "9"], True)
    assert sb.commands.kill(8, signal=2) is False
    assert server.last("DELETE", CMDS + "/8").params == {"signal": "2"}
    before = len(server.seen)
    assert sb.commands.connect(7).pid == 7
    assert len(server.seen) == before
