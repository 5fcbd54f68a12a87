"""AsyncSandbox runs the same operations; its public surface matches Sandbox's exactly."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from qbox import (
    ApiKeys,
    AsyncApiKeys,
    AsyncAudit,
    AsyncCodeContexts,
    AsyncCommandHandle,
    AsyncCommands,
    AsyncEnvs,
    AsyncFiles,
    AsyncSandbox,
    AsyncSystem,
    AsyncTemplates,
    AsyncUsers,
    Audit,
    CodeContexts,
    CommandHandle,
    CommandOutput,
    Commands,
    Envs,
    Files,
    RateLimitedError,
    Sandbox,
    SandboxNotActiveError,
    System,
    Templates,
    Users,
)
from qbox.sdk._hybrid import class_or_instance
from tests.unit.sdk.fakes import FakeServer, error, reply, sandbox

PAIRS = [
    (Sandbox, AsyncSandbox),
    (Commands, AsyncCommands),
    (CommandHandle, AsyncCommandHandle),
    (Files, AsyncFiles),
    (Envs, AsyncEnvs),
    (System, AsyncSystem),
    (Templates, AsyncTemplates),
    (ApiKeys, AsyncApiKeys),
    (Users, AsyncUsers),
    (Audit, AsyncAudit),
    (CodeContexts, AsyncCodeContexts),
]


def public_members(cls: type) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_") and name != "__init__":
            continue
        members[name] = inspect.getattr_static(cls, name)
    return members


def describe(member: Any) -> Any:
    if isinstance(member, property):
        return "property"
    if isinstance(member, class_or_instance):
        return ("class_or_instance", describe(member.on_class), describe(member.on_instance))
    function = member.__func__ if isinstance(member, classmethod | staticmethod) else member
    if not callable(function):
        return type(member).__name__
    params = [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]
    return (type(member).__name__, params)


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=lambda c: c.__name__)
def test_same_methods_and_parameters(sync_cls: type, async_cls: type) -> None:
    sync_members = public_members(sync_cls)
    async_members = public_members(async_cls)
    assert sorted(sync_members) == sorted(async_members)
    for name, member in sync_members.items():
        assert describe(member) == describe(async_members[name]), name


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=lambda c: c.__name__)
def test_async_methods_are_coroutines_where_sync_ones_do_io(sync_cls: type, async_cls: type) -> None:
    no_io = {"connect"} if sync_cls is Commands else set()
    no_io |= {"disconnect"}
    for name, member in public_members(async_cls).items():
        if name == "__init__" or name in no_io or isinstance(member, property):
            continue
        if isinstance(member, class_or_instance):
            functions = [member.on_class, member.on_instance]
        else:
            functions = [member.__func__ if isinstance(member, classmethod) else member]
        for function in functions:
            # Lazy iteration (``Audit.iter``) is an async generator where the sync twin is a generator.
            if inspect.isasyncgenfunction(function):
                sync_member = inspect.getattr_static(sync_cls, name)
                assert inspect.isgeneratorfunction(getattr(sync_member, "__func__", sync_member)), name
                continue
            assert inspect.iscoroutinefunction(function), f"{async_cls.__name__}.{name}"


def test_context_managers_match() -> None:
    assert hasattr(Sandbox, "__enter__") and hasattr(Sandbox, "__exit__")
    assert hasattr(AsyncSandbox, "__aenter__") and hasattr(AsyncSandbox, "__aexit__")
    assert hasattr(CommandHandle, "__iter__") and hasattr(AsyncCommandHandle, "__aiter__")


async def test_async_lifecycle(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, [{"id": "tpl_python", "name": "python"}]))
    server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_1")))
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    server.on("DELETE", "/v1/sandboxes/sb_1", reply(204))
    config = server.config()
    async with await AsyncSandbox.create("python", config=config) as sb:
        assert (await sb.get_info()).id == "sb_1"
    assert (await AsyncSandbox.get_info("sb_1", config=config)).is_running
    assert server.targets == [
        "GET /v1/templates",
        "POST /v1/sandboxes",
        "GET /v1/sandboxes/sb_1",
        "DELETE /v1/sandboxes/sb_1",
        "GET /v1/sandboxes/sb_1",
    ]
    assert server.last("POST", "/v1/sandboxes").params == {"wait": "true", "waitTimeoutSec": "120"}


async def test_async_commands(server: FakeServer) -> None:
    cmds = "/v1/sandboxes/sb_1/commands"
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    server.on("POST", cmds, reply(200, {"pid": 3}))
    server.on("GET", cmds + "/3", reply(200, {"alive": True}), reply(200, {"alive": False}))
    server.on(
        "GET",
        cmds + "/3/logs",
        reply(200, {"stdout": "a"}),
        reply(200, {"stdout": "ab"}),
    )
    sb = await AsyncSandbox.connect("sb_1", config=server.config())
    handle = await sb.commands.run("x", background=True)
    chunks = [chunk async for chunk in handle]
    assert chunks == [CommandOutput("stdout", "a"), CommandOutput("stdout", "b")]
    assert server.config().clock is not None
    await sb.close()


async def test_async_errors_and_retries(server: FakeServer) -> None:
    server.on(
        "GET",
        "/v1/sandboxes/sb_1",
        error(429, "rate_limited", **{"Retry-After": "1"}),
        reply(200, sandbox("sb_1", status="paused")),
    )
    config = server.config()
    with pytest.raises(SandboxNotActiveError):
        await AsyncSandbox.connect("sb_1", config=config)
    assert config.clock.sleeps == [1.0]  # type: ignore[union-attr]
    server.on("GET", "/v1/system", error(429, "rate_limited"))
    with pytest.raises(RateLimitedError):
        await AsyncSystem.info(config=server.config(max_retries=0))
