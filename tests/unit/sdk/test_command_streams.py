"""Command output from the qbox follow stream (NDJSON), polling where there is none; stdin."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from qbox import AsyncSandbox, CommandOutput, CommandResult
from tests.unit.sdk.fakes import FakeServer, error, reply, sandbox
from tests.unit.sdk.test_commands import ALIVE, CMDS, LOGS, PROC, STARTED, connect, exited

NDJSON = "application/x-ndjson"


def events(*items: dict[str, Any]) -> httpx.Response:
    body = b"".join(json.dumps(item).encode() + b"\n" for item in items)
    return httpx.Response(200, headers={"content-type": NDJSON}, content=body)


def out(data: str) -> dict[str, Any]:
    return {"type": "stdout", "data": data}


def err(data: str) -> dict[str, Any]:
    return {"type": "stderr", "data": data}


def ended(code: int = 0, signal: int = 0) -> dict[str, Any]:
    return {"type": "exit", "exitCode": code, "signal": signal, "oomKilled": False}


def test_iteration_reads_the_follow_stream_in_one_request(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", LOGS, events(out("1\n"), err("warn\n"), out("2\n"), ended(0)))
    sb, clock = connect(server)
    handle = sb.commands.run_argv(["count"], background=True)
    assert list(handle) == [CommandOutput("stdout", "1\n"), CommandOutput("stderr", "warn\n"),
                            CommandOutput("stdout", "2\n")]
    follow = server.last("GET", LOGS)
    assert follow.params == {"follow": "true", "stdoutOffset": "0", "stderrOffset": "0"}
    assert follow.timeout.get("read") is None  # output may pause as long as it likes
    assert server.targets[1:] == [f"POST {CMDS}", f"GET {LOGS}"]
    assert clock.sleeps == []


def test_a_stream_broken_off_is_continued_by_polling_from_where_it_stood(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", LOGS, events(out("ab")),  # no exit event: broken off
              reply(200, {"stdout": "abcd", "stderr": ""}), reply(200, {"stdout": "abcd", "stderr": "e"}))
    server.on("GET", PROC, exited(3))
    sb, _ = connect(server)
    handle = sb.commands.run_argv(["x"], background=True)
    assert list(handle) == [CommandOutput("stdout", "ab"), CommandOutput("stdout", "cd"),
                            CommandOutput("stderr", "e")]


def test_a_server_without_streams_is_polled_without_a_wasted_request(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", LOGS, reply(200, {"stdout": "1\n", "stderr": ""}),
              reply(200, {"stdout": "1\n2\n", "stderr": ""}))
    server.on("GET", PROC, ALIVE, exited(0))
    sb, clock = connect(server)
    handle = sb.commands.run_argv(["count"], background=True)
    assert list(handle) == [CommandOutput("stdout", "1\n"), CommandOutput("stdout", "2\n")]
    # The follow request's plain answer served as the first poll.
    assert server.targets[1:] == [f"POST {CMDS}", f"GET {LOGS}", f"GET {PROC}", f"GET {LOGS}",
                                  f"GET {PROC}", f"GET {LOGS}"]
    assert len(clock.sleeps) == 1


def test_a_server_refusing_the_parameters_is_polled(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", LOGS, error(400, "validation_error"), reply(200, {"stdout": "x", "stderr": ""}))
    server.on("GET", PROC, exited(0))
    sb, _ = connect(server)
    assert list(sb.commands.run_argv(["x"], background=True)) == [CommandOutput("stdout", "x")]


def test_callbacks_are_fed_from_the_stream(server: FakeServer) -> None:
    server.on("POST", CMDS, STARTED)
    server.on("GET", LOGS, events(out("a"), err("b"), out("c"), ended(0, 9)))
    sb, _ = connect(server)
    seen: list[str] = []
    result = sb.commands.run("x", on_stdout=lambda t: seen.append("out:" + t),
                             on_stderr=lambda t: seen.append("err:" + t), raise_on_error=False)
    assert seen == ["out:a", "err:b", "out:c"]
    assert result == CommandResult(exit_code=137, stdout="ac", stderr="b")  # killed by 9
    assert f"GET {PROC}" not in server.targets
    timeout = server.last("GET", LOGS).timeout
    assert 0 < timeout["read"] <= 60  # bounded by the run's own timeout


def test_stdin_for_background_commands(server: FakeServer) -> None:
    stdin = PROC + "/stdin"
    server.on("POST", CMDS, STARTED)
    server.on("POST", stdin, httpx.Response(204))
    sb, _ = connect(server)
    handle = sb.commands.run("cat", background=True, stdin=True)
    assert server.last("POST", CMDS).body == {"cmd": "/bin/sh", "args": ["-c", "cat"], "stdin": True}
    handle.send_stdin("hello\n")
    handle.close_stdin()
    assert [s.body for s in server.seen if s.path == stdin] == [
        {"data": "hello\n", "close": False}, {"data": "", "close": True}]
    with pytest.raises(ValueError, match="background"):
        sb.commands.run("cat", stdin=True)
    sb.commands.run("true", background=True)
    assert "stdin" not in server.last("POST", CMDS).body  # never sent unless asked for


async def test_async_iteration_and_stdin_use_the_same_wire(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    server.on("POST", CMDS, STARTED)
    server.on("POST", PROC + "/stdin", httpx.Response(204))
    server.on("GET", LOGS, events(out("echo"), ended(0)))
    sb = await AsyncSandbox.connect("sb_1", config=server.config())
    handle = await sb.commands.run("cat", background=True, stdin=True)
    await handle.send_stdin("echo")
    await handle.close_stdin()
    assert [chunk async for chunk in handle] == [CommandOutput("stdout", "echo")]
    assert server.last("GET", LOGS).params["follow"] == "true"
