"""The public SDK used as docs/sdk.md shows it. Never run: test_typing.py has mypy --strict check it."""

from __future__ import annotations

from typing import assert_type

from qbox import (
    AsyncCommandHandle,
    AsyncSandbox,
    AsyncTemplate,
    CommandHandle,
    CommandOutput,
    CommandResult,
    CreatedHostToken,
    Execution,
    ExecutionError,
    Host,
    Hosts,
    HostTokens,
    LogEntry,
    Port,
    PortSpec,
    Result,
    Sandbox,
    SandboxInfo,
    Step,
    Template,
    TemplateInfo,
)


def show(result: Result) -> None:
    print(result.text)


def report(error: ExecutionError) -> None:
    print(error.name, error.value)


def blocking() -> None:
    with Sandbox.create("python", timeout=300, metadata={"name": "web"}, envs={"DEBUG": "1"}) as sb:
        assert_type(sb.commands.run("python3 -c 'print(6 * 7)'"), CommandResult)
        sb.commands.run("make", on_stdout=print, on_stderr=print)
        handle = sb.commands.run("python3 -m http.server", background=True)
        assert_type(handle, CommandHandle)
        for chunk in handle:
            assert_type(chunk, CommandOutput)
        # Both forms of a class-or-instance method, each with its own signature.
        assert_type(sb.get_info(), SandboxInfo)
        assert_type(Sandbox.get_info(sb.id, request_timeout=5), SandboxInfo)
        assert_type(sb.logs(tail=10), list[LogEntry])
        assert_type(Sandbox.logs(sb.id, tail=10), list[LogEntry])
        execution = sb.run_code("1 + 1", on_stdout=print, on_stderr=print, on_result=show, on_error=report)
        assert_type(execution, Execution)
        sb.files.write("project/main.py", "print(6 * 7)\n")
        sb.files.upload("model.bin", "/models/model.bin", on_progress=lambda done, total: None)
        assert_type(sb.ports.expose_and_wait(8000, timeout=30), str)
        assert_type(sb.ports.expose(9000, visibility="signed_url", ttl=600), str)
        assert_type(sb.ports.list(), list[Port])
        assert_type(sb.get_host(8000), str)
    Sandbox.create("python", ports=[PortSpec(8080), PortSpec(80, force=True)]).close()
    info = Template.create(
        "py-tools", "python:3.12-slim", steps=[Step.run("apt-get update"), Step.env(A="1")], wait=True, on_log=print
    )
    assert_type(info, TemplateInfo)


async def on_output(text: str) -> None:
    print(text)


async def on_result(result: Result) -> None:
    print(result.text)


async def on_progress(done: int, total: int | None) -> None:
    print(done, total)


async def awaited() -> None:
    async with await AsyncSandbox.create("python") as sb:
        # Callbacks may be plain or ``async def``.
        result = await sb.commands.run("uname -a", on_stdout=on_output, on_stderr=print)
        assert_type(result, CommandResult)
        handle = await sb.commands.run("sleep 1", background=True, on_stdout=on_output)
        assert_type(handle, AsyncCommandHandle)
        assert_type(await handle.wait(on_stderr=on_output), CommandResult)
        assert_type(await sb.get_info(), SandboxInfo)
        assert_type(await AsyncSandbox.get_info(sb.id), SandboxInfo)
        assert_type(await sb.logs(tail=5), list[LogEntry])
        assert_type(await AsyncSandbox.logs(sb.id, tail=5), list[LogEntry])
        execution = await sb.run_code("x", on_stdout=on_output, on_result=on_result, on_error=report)
        assert_type(execution, Execution)
        await sb.files.write("/data.bin", b"\0" * 10, on_progress=on_progress)
        await sb.files.download("/data.bin", "copy.bin", on_progress=lambda done, total: None)
        assert_type(await sb.ports.expose_and_wait(8000), str)
        assert_type(await sb.ports.get(8000), Port)
        assert_type(await sb.get_host(8000), str)
    assert_type(await AsyncTemplate.create("py-tools", "python:3.12-slim", on_log=on_output), TemplateInfo)


def operator() -> None:
    for host in Hosts.list("ready"):
        assert_type(host, Host)
        assert_type(host.cpu_percent, float | None)
    assert_type(Hosts.drain("host_1"), Host)
    assert_type(HostTokens.create(ttl_seconds=600, labels={"gpu": "true"}), CreatedHostToken)
