"""sandbox.ports: the wire shapes of WIRE_PROTOCOL.md §4.9 through a mock transport, sync and async
on the same operations, expose_and_wait's polling, ports at spawn and get_host."""

from __future__ import annotations

from typing import Any

import pytest

from qbox import (
    AsyncPorts,
    AsyncSandbox,
    Port,
    PortAlreadyExposedError,
    PortCountLimitError,
    PortNotFoundError,
    PortNotReachableError,
    PortReservedError,
    Ports,
    PortSpec,
    Sandbox,
    SignedUrlTtlInvalidError,
)
from tests.unit.sdk.fakes import FakeClock, FakeServer, error, reply, sandbox
from tests.unit.sdk.test_async import describe, public_members

SB = "/v1/sandboxes/sb_1"
PORTS = SB + "/ports"
URL = "http://8000-sb_1.localhost:8080/"


def port(number: int = 8000, **extra: Any) -> dict[str, Any]:
    return {"port": number, "visibility": "public", "hostHeaderMode": "rewrite",
            "url": f"http://{number}-sb_1.localhost:8080/", "allowedUsers": None, "signedUrl": None,
            "signedUrlExpiresAt": None, **extra}


@pytest.fixture
def sb(server: FakeServer) -> Sandbox:
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    return Sandbox.connect("sb_1", config=server.config())


def test_sync_and_async_ports_are_the_same_surface() -> None:
    sync_members, async_members = public_members(Ports), public_members(AsyncPorts)
    assert sorted(sync_members) == sorted(async_members)
    for name, member in sync_members.items():
        assert describe(member) == describe(async_members[name]), name


def test_expose_sends_the_published_body_and_returns_the_url(server: FakeServer, sb: Sandbox) -> None:
    server.on("POST", PORTS, reply(201, port()))
    assert sb.ports.expose(8000) == URL
    assert server.last("POST", PORTS).body == {"port": 8000, "visibility": "public", "hostHeaderMode": "rewrite"}
    signed = URL + "?qbox_signature=123.abc"
    server.routes[("POST", PORTS)] = [reply(201, port(visibility="signed_url", signedUrl=signed,
                                                      signedUrlExpiresAt=123))]
    assert sb.ports.expose(8000, visibility="signed_url", ttl=60, force=True, host_header_mode="preserve") == signed
    assert server.last("POST", PORTS).body == {"port": 8000, "visibility": "signed_url",
                                               "hostHeaderMode": "preserve", "signedUrlTtlSeconds": 60,
                                               "force": True}
    sb.ports.expose(8000, visibility="private", allowed_users=("usr_1", "a@b.io"))
    assert server.last("POST", PORTS).body["allowedUsers"] == ["usr_1", "a@b.io"]


def test_each_refusal_is_its_class(server: FakeServer, sb: Sandbox) -> None:
    for status, code, cls in [(400, "port_reserved", PortReservedError), (409, "port_already_exposed",
                              PortAlreadyExposedError), (507, "port_count_limit", PortCountLimitError),
                              (400, "signed_url_ttl_invalid", SignedUrlTtlInvalidError)]:
        server.routes[("POST", PORTS)] = [error(status, code)]
        with pytest.raises(cls):
            sb.ports.expose(8000)
    server.on("GET", PORTS + "/9", error(404, "port_not_found"))
    with pytest.raises(PortNotFoundError):
        sb.ports.get(9)
    with pytest.raises(ValueError):
        sb.ports.get("8000")  # type: ignore[arg-type]


def test_list_get_update_unexpose_mint_probe(server: FakeServer, sb: Sandbox) -> None:
    server.on("GET", PORTS, reply(200, {"ports": [port(3000), port(8000, visibility="private",
                                                                   allowedUsers=["a@b.io"])]}))
    listed = sb.ports.list()
    assert [(p.port, p.visibility, p.allowed_users) for p in listed] == [(3000, "public", None),
                                                                          (8000, "private", ["a@b.io"])]
    assert listed[1].raw["url"] == URL and listed[1].host == "8000-sb_1.localhost:8080"
    server.on("GET", PORTS + "/8000", reply(200, port()))
    assert sb.ports.get(8000) == Port(8000, "public", "rewrite", URL)
    assert sb.get_host(8000) == "8000-sb_1.localhost:8080"
    server.on("PATCH", PORTS + "/8000", reply(200, port(visibility="private", allowedUsers=[])))
    assert sb.ports.update(8000, visibility="private").visibility == "private"
    assert server.last("PATCH", PORTS + "/8000").body == {"visibility": "private"}
    sb.ports.update(8000, allowed_users=["usr_2"], host_header_mode="preserve")
    assert server.last("PATCH", PORTS + "/8000").body == {"allowedUsers": ["usr_2"], "hostHeaderMode": "preserve"}
    server.on("DELETE", PORTS + "/8000", reply(204))
    sb.ports.unexpose(8000)
    signed = URL + "?qbox_signature=9.f"
    server.on("POST", PORTS + "/8000/signed-url", reply(200, port(visibility="signed_url", signedUrl=signed,
                                                                  signedUrlExpiresAt=9)))
    assert sb.ports.mint_signed_url(8000) == signed
    assert server.last("POST", PORTS + "/8000/signed-url").body == {}
    sb.ports.mint_signed_url(8000, ttl=30)
    assert server.last("POST", PORTS + "/8000/signed-url").body == {"ttlSeconds": 30}
    server.on("POST", PORTS + "/8000/probe", reply(200, {"reachable": True}))
    assert sb.ports.probe(8000) is True
    assert server.last("POST", PORTS + "/8000/probe").body is None
    server.routes[("POST", PORTS + "/8000/probe")] = [reply(200, None)]
    assert sb.ports.probe(8000) is False


def test_expose_and_wait_polls_every_half_second(server: FakeServer) -> None:
    clock = FakeClock()
    server.on("GET", SB, reply(200, sandbox("sb_1")))
    sb = Sandbox.connect("sb_1", config=server.config(clock=clock))
    server.on("POST", PORTS, reply(201, port()))
    server.on("POST", PORTS + "/8000/probe", reply(200, {"reachable": False}), reply(200, {"reachable": False}),
              reply(200, {"reachable": True}))
    assert sb.ports.expose_and_wait(8000) == URL
    assert clock.sleeps == [0.5, 0.5]
    server.routes[("POST", PORTS + "/8000/probe")] = [reply(200, {"reachable": False})]
    with pytest.raises(PortNotReachableError) as caught:
        sb.ports.expose_and_wait(8000, timeout=3)
    assert caught.value.code == "port_not_reachable" and caught.value.details["port"] == 8000
    assert sum(clock.sleeps[2:]) <= 3


def test_create_sends_the_ports(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, [{"id": "tpl_python", "name": "python"}]))
    server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_1")))
    sb = Sandbox.create("python", ports=[PortSpec(8080), PortSpec(80, visibility="signed_url", force=True, ttl=9)],
                        config=server.config())
    assert isinstance(sb.ports, Ports)
    assert server.last("POST", "/v1/sandboxes").body["ports"] == [
        {"port": 8080, "visibility": "public", "hostHeaderMode": "rewrite"},
        {"port": 80, "visibility": "signed_url", "hostHeaderMode": "rewrite", "signedUrlTtlSeconds": 9,
         "force": True}]


async def test_async_ports(server: FakeServer) -> None:
    server.on("GET", "/v1/templates", reply(200, [{"id": "tpl_python", "name": "python"}]))
    server.on("POST", "/v1/sandboxes", reply(201, sandbox("sb_1")))
    server.on("POST", PORTS, reply(201, port()))
    server.on("POST", PORTS + "/8000/probe", reply(200, {"reachable": False}), reply(200, {"reachable": True}))
    server.on("GET", PORTS, reply(200, {"ports": [port()]}))
    server.on("GET", PORTS + "/8000", reply(200, port()))
    server.on("DELETE", PORTS + "/8000", reply(204))
    sb = await AsyncSandbox.create("python", ports=[PortSpec(8000)], config=server.config())
    assert server.last("POST", "/v1/sandboxes").body["ports"] == [
        {"port": 8000, "visibility": "public", "hostHeaderMode": "rewrite"}]
    assert await sb.ports.expose_and_wait(8000, timeout=5) == URL
    assert [p.port for p in await sb.ports.list()] == [8000]
    assert await sb.get_host(8000) == "8000-sb_1.localhost:8080"
    await sb.ports.unexpose(8000)
    await sb.close()
