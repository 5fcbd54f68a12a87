"""The async SDK awaits ``async def`` callbacks, in order, where it calls plain ones; the sync
SDK refuses them rather than dropping them unrun."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox.sdk import AsyncSandbox, AsyncTemplate, ExecutionError, Result
from tests.unit.sdk.fakes import FakeServer, reply, sandbox
from tests.unit.sdk.test_code import COMPLETE, EXECUTE, OUT, RAISED, RESULT, STARTED, sse
from tests.unit.sdk.test_commands import ALIVE, CMDS, LOGS, PROC, exited
from tests.unit.sdk.test_commands import STARTED as COMMAND_STARTED
from tests.unit.sdk.test_commands import connect as connect_sync
from tests.unit.sdk.test_files import DOWNLOAD, FILE, RawBodyServer
from tests.unit.sdk.test_templates_build import LOG, template

SB = "/v1/sandboxes/sb_1"


async def connect(server: FakeServer) -> AsyncSandbox:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    return await AsyncSandbox.connect("sb_1", config=server.config())


class Heard:
    """Async callbacks that each give the loop a turn before noting what they heard."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def hearing(self, label: str) -> Any:
        async def callback(*value: Any) -> None:
            await asyncio.sleep(0)
            self.items.append((label, *value))

        return callback


async def test_command_output_reaches_async_and_plain_callbacks(server: FakeServer) -> None:
    server.on("POST", CMDS, COMMAND_STARTED)
    server.on(
        "GET",
        LOGS,
        reply(200, {"stdout": "a", "stderr": ""}),
        reply(200, {"stdout": "ab", "stderr": "x"}),
        reply(200, {"stdout": "abc", "stderr": "x"}),
    )
    server.on("GET", PROC, ALIVE, exited(0))
    heard = Heard()
    plain: list[str] = []
    sb = await connect(server)
    result = await sb.commands.run("prog", on_stdout=heard.hearing("out"), on_stderr=plain.append)
    assert heard.items == [("out", "a"), ("out", "b"), ("out", "c")]
    assert plain == ["x"]
    assert result.stdout == "abc"
    await sb.close()


async def test_a_handle_awaits_the_callbacks_it_was_started_with(server: FakeServer) -> None:
    server.on("POST", CMDS, COMMAND_STARTED)
    server.on("GET", LOGS, reply(200, {"stdout": "a", "stderr": ""}), reply(200, {"stdout": "ab", "stderr": "e"}))
    server.on("GET", PROC, ALIVE, exited(0))
    heard = Heard()
    sb = await connect(server)
    handle = await sb.commands.run(
        "prog", background=True, on_stdout=heard.hearing("out"), on_stderr=heard.hearing("err")
    )
    await handle.wait()
    assert heard.items == [("out", "a"), ("out", "b"), ("err", "e")]
    await sb.close()


async def test_code_events_reach_async_callbacks_in_order(server: FakeServer) -> None:
    server.on("POST", EXECUTE, sse(STARTED, OUT, RESULT, RAISED, COMPLETE))
    heard = Heard()
    sb = await connect(server)
    execution = await sb.run_code(
        "print(1)",
        on_stdout=heard.hearing("out"),
        on_result=heard.hearing("result"),
        on_error=heard.hearing("error"),
    )
    labels = [item[0] for item in heard.items]
    assert labels == ["out", "result", "error"]
    assert heard.items[0] == ("out", "1\n")
    assert isinstance(heard.items[1][1], Result) and heard.items[1][1].text == "2"
    assert isinstance(heard.items[2][1], ExecutionError) and heard.items[2][1] == execution.error
    await sb.close()


async def test_what_an_async_callback_raises_ends_the_call(server: FakeServer) -> None:
    server.on("POST", EXECUTE, sse(STARTED, OUT, COMPLETE))
    sb = await connect(server)

    async def refuse(_text: str) -> None:
        await asyncio.sleep(0)
        raise LookupError("the callback said no")

    with pytest.raises(LookupError, match="the callback said no"):
        await sb.run_code("print(1)", on_stdout=refuse)
    await sb.close()


async def test_build_log_lines_reach_an_async_callback(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    log = b"pulling\nstep 1/1\ntemplate ready\n"
    server.on("GET", LOG, httpx.Response(200, headers={"Content-Type": "text/plain; charset=utf-8"}, content=log))
    server.on("GET", "/v1/templates/tpl_tools", reply(200, template("ready")))
    heard = Heard()
    info = await AsyncTemplate.create("tools", "img", on_log=heard.hearing("log"), config=server.config())
    assert info.is_ready
    assert heard.items == [("log", "pulling"), ("log", "step 1/1"), ("log", "template ready")]


async def test_file_progress_reaches_an_async_callback(tmp_path: Path) -> None:
    server = RawBodyServer()
    server.on("PUT", FILE, reply(204))
    data = b"z" * 1000
    server.on("GET", DOWNLOAD, httpx.Response(200, content=data, headers={"Content-Length": str(len(data))}))
    sb = await connect(server)
    uploaded, downloaded = Heard(), Heard()
    await sb.files.write("/f.bin", data, on_progress=uploaded.hearing("up"))
    await sb.files.download("/f.bin", tmp_path / "f.bin", on_progress=downloaded.hearing("down"))
    assert server.last("PUT", FILE).body == data
    assert uploaded.items == [("up", 0, 1000), ("up", 1000, 1000)]
    assert downloaded.items == [("down", 0, 1000), ("down", 1000, 1000)]
    assert (tmp_path / "f.bin").read_bytes() == data
    await sb.close()


def test_the_sync_sdk_refuses_an_async_callback_instead_of_dropping_it(server: FakeServer) -> None:
    server.on("POST", CMDS, COMMAND_STARTED)
    server.on("GET", LOGS, reply(200, {"stdout": "a", "stderr": ""}))
    server.on("GET", PROC, ALIVE, exited(0))
    heard = Heard()
    sb, _ = connect_sync(server)
    with pytest.raises(TypeError, match="async callback"):
        sb.commands.run("prog", on_stdout=heard.hearing("out"))
    assert heard.items == []
