"""``Template.set_public`` / ``create(public=…)`` and the owner fields (issue 13, finding 1)."""

from __future__ import annotations

from typing import Any

import pytest

from qbox.sdk import AsyncTemplate, PermissionDeniedError, Template
from tests.unit.sdk.fakes import FakeServer, error, reply

ONE = "/v1/templates/tpl_tools"


def template(**extra: Any) -> dict[str, Any]:
    return {"id": "tpl_tools", "name": "tools", "status": "ready", "imageRef": "busybox:1", **extra}


def test_set_public_patches_the_template_by_name(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, [template()]))
    server.on("PATCH", ONE, reply(200, template(public=True, ownerId="usr_alice")))
    info = Template.set_public("tools", config=server.config())
    assert info.public is True and info.owner_id == "usr_alice"
    assert server.last("PATCH", ONE).body == {"public": True}
    Template.set_public("tpl_tools", False, config=server.config())
    assert server.last("PATCH", ONE).body == {"public": False}


def test_a_member_is_refused(server: FakeServer) -> None:
    server.on("PATCH", ONE, error(403, "forbidden", "only an admin may change who sees a template"))
    with pytest.raises(PermissionDeniedError):
        Template.set_public("tpl_tools", config=server.config())


def test_create_sends_public_only_when_asked(server: FakeServer) -> None:
    server.on("POST", "/v1/templates", reply(201, template(status="building")))
    Template.create("tools", "busybox:1", config=server.config())
    assert "public" not in server.last("POST", "/v1/templates").body
    Template.create("tools", "busybox:1", public=True, config=server.config())
    assert server.last("POST", "/v1/templates").body["public"] is True


def test_old_servers_answer_without_the_fields(server: FakeServer) -> None:
    server.on("GET", ONE, reply(200, template()))
    info = Template.get("tpl_tools", config=server.config())
    assert info.public is False and info.owner_id is None


async def test_async_twin(server: FakeServer) -> None:
    server.on("PATCH", ONE, reply(200, template(public=True)))
    info = await AsyncTemplate.set_public("tpl_tools", config=server.config())
    assert info.public is True
