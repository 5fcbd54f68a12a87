"""``Template``: building templates from images, following their build log, and the rest of the noun."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from qbox.sdk import (
    AsyncTemplate,
    AsyncTemplates,
    ConflictError,
    QboxError,
    Step,
    Template,
    TemplateBuildError,
    TemplateBuildTimeoutError,
    TemplateInfo,
    TemplateNotFoundError,
    Templates,
)
from qbox.sdk._template_ops import TemplateSpec
from tests.unit.sdk.fakes import FakeServer, error, reply

LOG = "/v1/templates/tpl_tools/build-log"
SECRET = "hunter2-secret"


def template(status: str = "building", **extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": status, "imageRef": "python:3.12-slim", **extra}


def log_reply(*chunks: bytes, then: Exception | None = None) -> Callable[[httpx.Request], httpx.Response]:
    """A text/plain body sent in these chunks (then failing with ``then``, if given)."""

    def body() -> Iterator[bytes]:
        yield from chunks
        if then is not None:
            raise then

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/plain; charset=utf-8"}, content=body())

    return answer


def test_create_sends_the_wire_body_and_returns_at_once(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    info = Template.create(
        "tools", "python:3.12-slim",
        steps=[Step.run("apt-get update"), Step.env(A="1"), Step.workdir("/app"), {"run": "make", "user": "user"}],
        start_cmd="python -m http.server", ready_cmd="curl -sf localhost:8000", ready_timeout_s=60,
        default_vcpus=2, default_memory_mb=1024, default_disk_mb=4096, enable_ssh=True, tags=["team"],
        user="app", workdir="/srv", env={"X": "y"}, allow_internet_access=False, runtime="runsc",
        registry_credentials=("robot", SECRET), config=server.config(),
    )  # fmt: skip
    assert info.status == "building" and not info.is_ready and info.is_building
    assert server.targets == ["POST /v1/templates"]
    assert server.last("POST", "/v1/templates").body == {
        "name": "tools",
        "imageRef": "python:3.12-slim",
        "defaultVcpus": 2,
        "defaultMemoryMb": 1024,
        "readyTimeoutS": 60,
        "enableSsh": True,
        "tags": ["team"],
        "steps": [
            {"run": "apt-get update", "user": "root"},
            {"env": {"A": "1"}},
            {"workdir": "/app"},
            {"run": "make", "user": "user"},
        ],
        "startCmd": "python -m http.server",
        "readyCmd": "curl -sf localhost:8000",
        "user": "app",
        "workdir": "/srv",
        "env": {"X": "y"},
        "defaultDiskMb": 4096,
        "allowInternetAccess": False,
        "runtime": "runsc",
        "registryCredentials": {"username": "robot", "password": SECRET},
    }


def test_create_defaults_send_only_what_the_published_client_sends(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    Template.create("tools", "python:3.12-slim", config=server.config())
    assert server.last("POST", "/v1/templates").body == {
        "name": "tools", "imageRef": "python:3.12-slim", "defaultVcpus": 1, "defaultMemoryMb": 512,
        "readyTimeoutS": 30, "enableSsh": False, "tags": [],
    }  # fmt: skip


def test_credentials_as_a_mapping_and_bad_ones_never_echoed() -> None:
    config = FakeServer().config()
    spec = TemplateSpec("t", "img", registry_credentials={"username": "u", "password": SECRET})
    assert spec.body()["registryCredentials"] == {"username": "u", "password": SECRET}
    assert SECRET not in repr(spec)
    with pytest.raises(ValueError) as caught:
        Template.create("t", "img", registry_credentials={"user": "u", "pass": SECRET}, config=config)
    assert SECRET not in str(caught.value)


def test_step_helpers_are_the_wire_dicts() -> None:
    assert Step.run("make") == {"run": "make", "user": "root"}
    assert Step.run("make", user="app") == {"run": "make", "user": "app"}
    assert Step.env({"A": "1"}, B="2") == {"env": {"A": "1", "B": "2"}}
    assert Step.workdir("/app") == {"workdir": "/app"}
    assert Step.copy("/etc/motd", "hi\n") == {
        "copy": {"path": "/etc/motd", "content": "hi\n", "encoding": "utf-8", "mode": 0o644, "user": "root"}
    }
    binary = Step.copy("/bin/x", b"\x00\xff", mode=0o755, user="app")["copy"]
    assert binary["encoding"] == "base64" and base64.b64decode(binary["content"]) == b"\x00\xff"
    assert binary["mode"] == 493 and binary["user"] == "app"


def test_wait_follows_the_log_line_by_line_then_reads_the_outcome(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    chunks = (b"pulling docker://python:3.12-slim\nstep 1/1: ru", b"n (root): echo hi\nhi\n", b"template ready")
    server.on("GET", LOG, log_reply(*chunks))
    server.on("GET", "/v1/templates/tpl_tools", reply(200, template("ready", imageDigest="sha256:abc")))
    lines: list[str] = []
    info = Template.create("tools", "python:3.12-slim", steps=[Step.run("echo hi")], on_log=lines.append,
                           config=server.config())  # fmt: skip
    assert info.is_ready and info.image_digest == "sha256:abc"
    assert lines == ["pulling docker://python:3.12-slim", "step 1/1: run (root): echo hi", "hi", "template ready"]
    assert server.targets == ["POST /v1/templates", f"GET {LOG}", "GET /v1/templates/tpl_tools"]
    followed = server.last("GET", LOG)
    assert followed.params == {"follow": "true"} and followed.headers["accept"] == "text/plain"


def test_a_failed_build_raises_with_its_error(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    server.on("GET", LOG, log_reply(b"build failed: step 1/1 (run: false) exited with code 1\n"))
    reason = "step 1 (run: false) failed with exit code 1"
    server.on("GET", "/v1/templates/tpl_tools", reply(200, template("failed", buildError=reason)))
    with pytest.raises(TemplateBuildError) as caught:
        Template.create("tools", "img", registry_credentials=("u", SECRET), wait=True, config=server.config())
    assert caught.value.build_error == reason and caught.value.template_id == "tpl_tools"
    assert reason in str(caught.value) and SECRET not in str(caught.value)
    assert isinstance(caught.value, QboxError) and caught.value.code == "build_failed"


def test_a_stalled_stream_is_followed_again_without_repeating_lines(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    server.on(
        "GET", LOG,
        log_reply(b"a\nb\npart", then=httpx.ReadTimeout("quiet step")),
        log_reply(b"a\nb\npartial line\nc\n"),
    )  # fmt: skip
    server.on("GET", "/v1/templates/tpl_tools", reply(200, template()), reply(200, template("ready")))
    lines: list[str] = []
    assert Template.create("tools", "img", on_log=lines.append, config=server.config()).is_ready
    assert lines == ["a", "b", "partial line", "c"]
    assert server.targets.count(f"GET {LOG}") == 2
    # Each wait for a chunk is bounded, so a dead connection is noticed.
    assert server.last("GET", LOG).timeout["read"] == 30.0


def test_the_wait_runs_out_with_a_timeout_error(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    server.on("GET", LOG, log_reply(b"still going\n"))  # ends, but the build does not
    server.on("GET", "/v1/templates/tpl_tools", reply(200, template()))
    config = server.config()
    with pytest.raises(TemplateBuildTimeoutError) as caught:
        Template.create("tools", "img", wait=True, timeout=10, config=config)
    assert isinstance(caught.value, TimeoutError) and caught.value.template_id == "tpl_tools"
    assert config.clock is not None and sum(config.clock.sleeps) == pytest.approx(10)  # type: ignore[attr-defined]


def test_a_server_without_a_build_log_is_polled(server: FakeServer) -> None:
    server.on("GET", "/v1/templates/tpl_tools", reply(200, template()), reply(200, template("ready")))
    assert Template.wait("tpl_tools", config=server.config()).is_ready
    assert server.targets == [f"GET {LOG}", "GET /v1/templates/tpl_tools", "GET /v1/templates/tpl_tools"]


def test_a_missing_template_is_not_polled(server: FakeServer) -> None:
    server.on("GET", LOG, error(404, "template_not_found", "no template tpl_tools"))
    with pytest.raises(TemplateNotFoundError):
        Template.wait("tpl_tools", config=server.config())


def test_names_resolve_for_logs_delete_and_rebuild(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, [template("failed")]))
    server.on("GET", LOG, log_reply(b"one\ntwo\n"))
    server.on("DELETE", "/v1/templates/tpl_tools", reply(204))
    server.on("POST", "/v1/templates/tpl_tools/rebuild", reply(202, template()))
    config = server.config()
    assert Template.build_log("tools", config=config) == "one\ntwo\n"
    assert server.last("GET", LOG).params == {}
    assert list(Template.follow_build_log("tools", config=config)) == ["one", "two"]
    Template.delete("tools", config=config)
    assert Template.rebuild("tools", config=config).is_building
    assert server.last("POST", "/v1/templates/tpl_tools/rebuild").body is None
    Template.rebuild("tpl_tools", registry_credentials=("u", SECRET), config=config)
    assert server.last("POST", "/v1/templates/tpl_tools/rebuild").body == {
        "registryCredentials": {"username": "u", "password": SECRET}
    }
    assert server.targets.count("GET /v1/templates") == 4  # tpl_ ids are not looked up
    with pytest.raises(TemplateNotFoundError):
        Template.delete("nope", config=config)


def test_delete_in_use_is_a_conflict(server: FakeServer) -> None:
    server.on("DELETE", "/v1/templates/tpl_tools", error(409, "conflict", "in use", {"sandboxCount": 2}))
    with pytest.raises(ConflictError) as caught:
        Template.delete("tpl_tools", config=server.config())
    assert caught.value.details["sandboxCount"] == 2


def test_template_info_reads_the_build_fields() -> None:
    steps = [{"run": "make", "user": "root"}]
    info = TemplateInfo.from_wire(
        template("ready", steps=steps, user="app", workdir="/srv", env={"A": "1"}, startCmd="serve",
                 readyCmd="probe", readyTimeoutS=45, registryRef="docker://r/templates/tools@sha256:1",
                 defaultDiskMb=2048, runtime="crun", allowInternetAccess=False, builtin=False)
    )  # fmt: skip
    assert info.steps == tuple(steps) and info.user == "app" and info.workdir == "/srv"
    assert info.env == {"A": "1"} and info.start_cmd == "serve" and info.ready_cmd == "probe"
    assert info.ready_timeout_s == 45 and info.registry_ref.endswith("@sha256:1")
    assert info.default_disk_mb == 2048 and info.runtime == "crun" and not info.allow_internet_access
    bare = TemplateInfo.from_wire({"id": "tpl_x", "name": "x"})
    assert bare.steps == () and bare.workdir is None and bare.start_cmd is None and bare.allow_internet_access


def test_the_old_names_are_the_same_classes() -> None:
    assert Templates is Template and AsyncTemplates is AsyncTemplate


async def test_async_twin_waits_and_follows(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template()))
    server.on("GET", LOG, _whole_log(b"x\ny\n"))
    server.on("GET", "/v1/templates/tpl_tools", reply(200, template("ready")))
    server.on("GET", "/v1/templates", reply(200, [template("ready")]))
    config = server.config()
    lines: list[str] = []
    info = await AsyncTemplate.create("tools", "img", on_log=lines.append, config=config)
    assert info.is_ready and lines == ["x", "y"]
    assert [line async for line in AsyncTemplate.follow_build_log("tools", config=config)] == ["x", "y"]
    assert await AsyncTemplate.build_log("tpl_tools", config=config) == "x\ny\n"


def _whole_log(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/plain; charset=utf-8"}, content=body)
