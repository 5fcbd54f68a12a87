"""``Template.create(code_interpreter=…, warm_pool=…)``, ``set_warm_pool``, ``set_code_interpreter``
(and the async twins), and ``SandboxInfo.from_pool``."""

from __future__ import annotations

from typing import Any

import pytest

from qbox.sdk import AsyncTemplate, PermissionDeniedError, Sandbox, Template, WarmPool, WarmPoolInfo
from tests.unit.sdk.fakes import FakeServer, error, reply, sandbox

ONE = "/v1/templates/tpl_tools"
POOL = {"size": 2, "eager": True, "ready": 1, "booting": 1, "claimed": 3}


def template(**extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": "ready", "imageRef": "busybox:1", **extra}


def test_create_sends_the_interpreter_and_the_pool_only_when_given(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template(status="building", codeInterpreter="eager",
                                                          warmPool={**POOL, "ready": 0})))
    info = Template.create("tools", "busybox:1", code_interpreter="eager", warm_pool=WarmPool(2, eager=False),
                           config=server.config())
    body = server.last("POST", "/v1/templates").body
    assert body["codeInterpreter"] == "eager" and body["warmPool"] == {"size": 2, "eager": False}
    assert info.code_interpreter == "eager" and info.warm_pool.size == 2
    Template.create("tools", "busybox:1", config=server.config())
    assert not {"codeInterpreter", "warmPool"} & set(server.last("POST", "/v1/templates").body)


def test_a_bare_size_is_an_eager_pool(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template(status="building")))
    Template.create("tools", "busybox:1", warm_pool=3, config=server.config())
    assert server.last("POST", "/v1/templates").body["warmPool"] == {"size": 3, "eager": True}


def test_the_template_shows_its_pool(server: FakeServer) -> None:
    server.on("GET", ONE, reply(200, template(codeInterpreter="lazy", warmPool=POOL)))
    info = Template.get("tpl_tools", config=server.config())
    assert info.code_interpreter == "lazy"
    assert info.warm_pool == WarmPoolInfo(size=2, eager=True, ready=1, booting=1, claimed=3)


def test_an_old_server_shows_an_eager_interpreter_and_no_pool(server: FakeServer) -> None:
    server.on("GET", ONE, reply(200, template()))
    info = Template.get("tpl_tools", config=server.config())
    assert info.code_interpreter == "eager" and info.warm_pool == WarmPoolInfo()


def test_set_warm_pool_sends_only_what_is_given_by_name(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, [template()]))
    server.on("PATCH", ONE, reply(200, template(warmPool=POOL)))
    assert Template.set_warm_pool("tools", 2, config=server.config()).warm_pool.ready == 1
    assert server.last("PATCH", ONE).body == {"warmPool": {"size": 2}}
    Template.set_warm_pool("tpl_tools", eager=False, config=server.config())
    assert server.last("PATCH", ONE).body == {"warmPool": {"eager": False}}
    Template.set_warm_pool("tpl_tools", 0, eager=True, config=server.config())
    assert server.last("PATCH", ONE).body == {"warmPool": {"size": 0, "eager": True}}


def test_set_warm_pool_with_nothing_to_set_sends_nothing(server: FakeServer) -> None:
    with pytest.raises(ValueError, match="size, eager or both"):
        Template.set_warm_pool("tpl_tools", config=server.config())
    assert not server.seen


def test_a_members_pool_is_refused(server: FakeServer) -> None:
    server.on("PATCH", ONE, error(403, "permission_denied", "only an admin may give a template a warm pool"))
    with pytest.raises(PermissionDeniedError, match="only an admin"):
        Template.set_warm_pool("tpl_tools", 1, config=server.config())


def test_set_code_interpreter(server: FakeServer) -> None:
    server.on("PATCH", ONE, reply(200, template(codeInterpreter="eager")))
    assert Template.set_code_interpreter("tpl_tools", "eager", config=server.config()).code_interpreter == "eager"
    assert server.last("PATCH", ONE).body == {"codeInterpreter": "eager"}


async def test_async_twins(server: FakeServer) -> None:
    server.on("PATCH", ONE, reply(200, template(codeInterpreter="lazy", warmPool=POOL)))
    info = await AsyncTemplate.set_warm_pool("tpl_tools", 2, eager=True, config=server.config())
    assert info.warm_pool.claimed == 3
    assert server.last("PATCH", ONE).body == {"warmPool": {"size": 2, "eager": True}}
    await AsyncTemplate.set_code_interpreter("tpl_tools", "lazy", config=server.config())
    assert server.last("PATCH", ONE).body == {"codeInterpreter": "lazy"}


def test_a_sandbox_says_whether_it_came_from_a_pool(server: FakeServer) -> None:
    server.on("POST", "/v1/sandboxes", reply(201, sandbox(fromPool=True)))
    server.on("GET", "/v1/sandboxes/sb_abc12345", reply(200, sandbox()))
    box = Sandbox.create("tpl_python", config=server.config())
    assert box.info.from_pool is True
    assert box.get_info().from_pool is False
