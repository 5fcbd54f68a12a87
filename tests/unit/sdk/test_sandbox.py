"""Sandbox lifecycle: the requests each method sends and what it makes of the answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from qbox import (
    ConflictError,
    Sandbox,
    SandboxNotActiveError,
    SandboxNotFoundError,
    SandboxSpawnError,
    SandboxSpawnTimeoutError,
    SandboxState,
    TemplateNotFoundError,
    TemplateNotReadyError,
)
from tests.unit.sdk.fakes import FakeServer, error, reply, sandbox

TEMPLATES = [
    {"id": "tpl_python", "name": "python", "status": "ready"},
    {"id": "tpl_node", "name": "node", "status": "building"},
    {"id": "tpl_bare", "name": "bare"},
]


@pytest.fixture
def spawn(server: FakeServer) -> FakeServer:
    server.on("GET", "/v1/templates", reply(200, TEMPLATES))
    server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new")))
    server.on("DELETE", "/v1/sandboxes/sb_new", reply(204))
    return server


def test_create_resolves_the_name_and_waits(spawn: FakeServer) -> None:
    sb = Sandbox.create(
        "python",
        metadata={"name": "web", "team": "ml"},
        envs={"FOO": "1"},
        vcpus=2,
        memory_mb=1024,
        config=spawn.config(),
    )
    assert sb.id == sb.sandbox_id == "sb_new"
    assert spawn.targets == ["GET /v1/templates", "POST /v1/sandboxes"]
    post = spawn.last("POST", "/v1/sandboxes")
    assert post.params == {"wait": "true", "waitTimeoutSec": "120"}
    assert post.body == {
        "templateId": "tpl_python",
        "timeoutSeconds": 300,
        "labels": {"name": "web", "team": "ml"},
        "envs": {"FOO": "1"},
        "vcpus": 2,
        "memoryMb": 1024,
    }
    assert post.timeout["read"] == 135  # the wait plus a margin


def test_create_omits_what_is_not_given(spawn: FakeServer) -> None:
    Sandbox.create("tpl_custom", timeout=None, wait_timeout=10, config=spawn.config())
    post = spawn.last("POST", "/v1/sandboxes")
    assert spawn.targets == ["POST /v1/sandboxes"]  # tpl_ ids are not looked up
    assert post.body == {"templateId": "tpl_custom"}
    assert post.params["waitTimeoutSec"] == "10"
    assert post.timeout["read"] == 30  # never below the request timeout


def test_create_timeout_zero_is_sent(spawn: FakeServer) -> None:
    Sandbox.create("bare", timeout=0, config=spawn.config())
    post = spawn.last("POST", "/v1/sandboxes")
    assert post.body == {"templateId": "tpl_bare", "timeoutSeconds": 0}


def test_create_refuses_a_template_that_is_not_ready(spawn: FakeServer) -> None:
    with pytest.raises(TemplateNotReadyError) as info:
        Sandbox.create("node", config=spawn.config())
    assert info.value.details["templateId"] == "tpl_node"
    assert "POST /v1/sandboxes" not in spawn.targets


def test_create_unknown_template(spawn: FakeServer) -> None:
    with pytest.raises(TemplateNotFoundError):
        Sandbox.create("cobol", config=spawn.config())


def test_create_without_waiting(server: FakeServer) -> None:
    server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new", status="booting")))
    sb = Sandbox.create("tpl_python", wait_timeout=None, config=server.config())
    assert sb.info.status == "booting"
    assert server.seen[0].params == {}


def test_create_that_ends_instead_of_starting(server: FakeServer) -> None:
    failed = sandbox("sb_new", status="failed", endReason="boot_failed")
    server.on("POST", "/v1/sandboxes", reply(201, failed))
    with pytest.raises(SandboxSpawnError) as info:
        Sandbox.create("tpl_python", config=server.config())
    assert info.value.details == {
        "sandboxId": "sb_new",
        "status": "failed",
        "endReason": "boot_failed",
    }


def test_create_still_booting_after_the_wait(server: FakeServer) -> None:
    server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new", status="booting")))
    with pytest.raises(SandboxSpawnTimeoutError) as info:
        Sandbox.create("tpl_python", wait_timeout=5, config=server.config())
    assert "Sandbox.connect('sb_new')" in info.value.message


def test_connect_requires_running(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1", status="killed")))
    with pytest.raises(SandboxNotActiveError) as info:
        Sandbox.connect("sb_1", config=server.config())
    assert info.value.current_state == "killed"


def test_connect_unknown(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", error(404, "sandbox_not_found"))
    with pytest.raises(SandboxNotFoundError):
        Sandbox.connect("sb_1", config=server.config())


def test_list(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, TEMPLATES))
    server.on("GET", "/v1/sandboxes", reply(200, [sandbox("sb_1"), sandbox("sb_2")]))
    found = Sandbox.list("running", "python", 5, config=server.config())
    assert [s.id for s in found] == ["sb_1", "sb_2"]
    params = server.last("GET", "/v1/sandboxes").params
    assert params == {"status": "running", "templateId": "tpl_python", "limit": "5"}


def test_list_everything_sends_no_filters(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes", reply(200, None))
    assert Sandbox.list(config=server.config()) == []
    assert server.seen[0].params == {}


def test_get_info_from_the_class_and_from_an_instance(server: FakeServer) -> None:
    wire = sandbox(
        "sb_1",
        labels={"name": "web"},
        vm={"vcpus": 2, "memoryMb": 2048},
        services=[{"name": "jupyter", "type": "code-interpreter"}],
        diskSizeMb=4096,
    )
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, wire))
    info = Sandbox.get_info("sb_1", config=server.config())
    assert info.id == "sb_1"
    assert info.template_id == "tpl_python"
    assert info.state is SandboxState.RUNNING and info.is_running and not info.is_terminal
    assert (info.vcpus, info.memory_mb, info.disk_size_mb) == (2, 2048, 4096)
    assert info.labels == info.metadata == {"name": "web"}
    assert info.name == "web"
    assert info.timeout_seconds == 300
    assert info.host_id == "host_1"
    assert info.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert info.ended_at is None
    assert info.allow_internet_access is True
    assert info.services[0].type == "code-interpreter"
    assert info.raw == wire

    sb = Sandbox.connect("sb_1", config=server.config())
    assert sb.get_info() == info


def test_unknown_states_are_kept(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1", status="hibernating")))
    info = Sandbox.get_info("sb_1", config=server.config())
    assert info.status == "hibernating" and info.state is None


def test_set_timeout(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    server.on("POST", "/v1/sandboxes/sb_1/timeout", reply(200, sandbox("sb_1", timeoutSeconds=60)))
    sb = Sandbox.connect("sb_1", config=server.config())
    info = sb.set_timeout(60)
    assert server.last("POST", "/v1/sandboxes/sb_1/timeout").body == {"timeoutSeconds": 60}
    assert info.timeout_seconds == 60 and sb.info.timeout_seconds == 60


def test_kill(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    server.on(
        "DELETE",
        "/v1/sandboxes/sb_1",
        reply(204),
        error(409, "sandbox_not_active", details={"currentState": "killed"}),
    )
    sb = Sandbox.connect("sb_1", config=server.config())
    assert sb.kill() is True
    assert sb.kill() is False  # already ended: not an error


def test_kill_by_id_of_an_unknown_sandbox(server: FakeServer) -> None:
    server.on("DELETE", "/v1/sandboxes/sb_x", error(404, "sandbox_not_found"))
    with pytest.raises(SandboxNotFoundError):
        Sandbox.kill_by_id("sb_x", config=server.config())


def test_context_manager_kills_on_exit(spawn: FakeServer) -> None:
    with Sandbox.create("python", config=spawn.config()) as sb:
        assert sb.id == "sb_new"
    assert spawn.targets[-1] == "DELETE /v1/sandboxes/sb_new"


def test_context_manager_does_not_mask_the_body_error(server: FakeServer) -> None:
    server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_new")))
    server.on("DELETE", "/v1/sandboxes/sb_new", error(409, "conflict"))
    with pytest.raises(KeyError), Sandbox.create("tpl_python", config=server.config()):
        raise KeyError("mine")
    with pytest.raises(ConflictError), Sandbox.create("tpl_python", config=server.config()):
        pass


def test_logs(server: FakeServer) -> None:
    entries = [
        {
            "time": "2025-01-02T03:04:05.000001Z",
            "level": "info",
            "component": "lifecycle",
            "message": "running",
        }
    ]
    server.on("GET", "/v1/sandboxes/sb_1/logs", reply(200, entries))
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    (entry,) = Sandbox.logs("sb_1", tail=10, config=server.config())
    assert server.seen[0].params == {"tail": "10"}
    assert (entry.level, entry.component, entry.message) == ("info", "lifecycle", "running")
    assert entry.time == datetime(2025, 1, 2, 3, 4, 5, 1, tzinfo=UTC)
    sb = Sandbox.connect("sb_1", config=server.config())
    assert sb.logs() == [entry]
    assert server.last("GET", "/v1/sandboxes/sb_1/logs").params == {}


def test_exec(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    answer = {"stdout": "2\n", "stderr": "", "exitCode": 0, "timedOut": False}
    server.on("POST", "/v1/sandboxes/sb_1/exec", reply(200, answer))
    sb = Sandbox.connect("sb_1", config=server.config())
    result = sb.exec("python", ["-c", "print(1+1)"], cwd="/tmp", envs={"A": "b"}, user="root", stdin="x")
    assert (result.stdout, result.exit_code, result.timed_out) == ("2\n", 0, False)
    sent = server.last("POST", "/v1/sandboxes/sb_1/exec")
    assert sent.body == {
        "cmd": "python",
        "args": ["-c", "print(1+1)"],
        "env": {"A": "b"},
        "cwd": "/tmp",
        "user": "root",
        "stdin": "x",
        "timeoutSeconds": 60,
    }
    assert sent.timeout["read"] == 75


def test_exec_minimal_body(server: FakeServer) -> None:
    server.on("GET", "/v1/sandboxes/sb_1", reply(200, sandbox("sb_1")))
    server.on("POST", "/v1/sandboxes/sb_1/exec", reply(200, {"exitCode": 3}))
    result = Sandbox.connect("sb_1", config=server.config()).exec("false", timeout=None)
    assert server.last("POST", "/v1/sandboxes/sb_1/exec").body == {"cmd": "false", "args": []}
    assert result.exit_code == 3 and result.stdout == ""
