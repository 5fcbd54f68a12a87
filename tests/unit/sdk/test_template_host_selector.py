"""``Template.create(host_selector=…)`` and ``Template.set_host_selector`` (and the async twin)."""

from __future__ import annotations

from typing import Any

from qbox.sdk import AsyncTemplate, Template
from tests.unit.sdk.fakes import FakeServer, reply

ONE = "/v1/templates/tpl_tools"


def template(**extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": "ready", "imageRef": "busybox:1", **extra}


def test_create_sends_the_selector_only_when_given(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template(status="building", hostSelector={"gpu": "true"})))
    info = Template.create("tools", "busybox:1", host_selector={"gpu": "true"}, config=server.config())
    assert server.last("POST", "/v1/templates").body["hostSelector"] == {"gpu": "true"}
    assert info.host_selector == {"gpu": "true"}
    Template.create("tools", "busybox:1", config=server.config())
    assert "hostSelector" not in server.last("POST", "/v1/templates").body


def test_set_host_selector_replaces_it_by_name_and_an_empty_one_clears_it(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, [template()]))
    server.on("PATCH", ONE, reply(200, template(hostSelector={"zone": "b"})), reply(200, template(hostSelector={})))
    assert Template.set_host_selector("tools", {"zone": "b"}, config=server.config()).host_selector == {"zone": "b"}
    assert server.last("PATCH", ONE).body == {"hostSelector": {"zone": "b"}}
    assert Template.set_host_selector("tpl_tools", {}, config=server.config()).host_selector == {}
    assert server.last("PATCH", ONE).body == {"hostSelector": {}}


def test_an_old_server_shows_no_selector(server: FakeServer) -> None:
    server.on("GET", ONE, reply(200, template()))
    assert Template.get("tpl_tools", config=server.config()).host_selector == {}


async def test_async_twin(server: FakeServer) -> None:
    server.on("PATCH", ONE, reply(200, template(hostSelector={"gpu": "true"})))
    info = await AsyncTemplate.set_host_selector("tpl_tools", {"gpu": "true"}, config=server.config())
    assert info.host_selector == {"gpu": "true"}
    assert server.last("PATCH", ONE).body == {"hostSelector": {"gpu": "true"}}
