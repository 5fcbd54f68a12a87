"""Sandbox networking on real crun: addresses, what a sandbox can and cannot reach, DNS, cleanup.

Every destination is on this machine: the host's own addresses, other
sandboxes, and a test namespace (``nettools.fake_world``) standing in for
the cloud metadata service and the internet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbox.agent.network import resolv
from tests.integration.agent.conftest import Agent
from tests.integration.agent.nettools import (
    CONNECT,
    METADATA,
    World,
    fake_world,
    host_address,
    host_connects,
    listen,
    port,
    received_nothing,
    sh,
)

pytestmark = pytest.mark.integration

SIOCGIFADDR = 0x8915
EXPECTED_FAILURE = "failed"


@pytest.fixture
def world() -> Iterator[World]:
    with fake_world() as made:
        yield made


def record(agent: Agent, sandbox_id: str) -> dict:  # type: ignore[type-arg]
    path = agent.settings.network_dir / sandbox_id / "network.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


async def address_of(agent: Agent, sandbox_id: str) -> str:
    r = await agent.client.get(f"/sandboxes/{sandbox_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["address"])


async def connect_from(agent: Agent, sandbox_id: str, address: str, to_port: int) -> str:
    result = await agent.exec(sandbox_id, "python3", "-c", CONNECT, address, str(to_port))
    return str(result["stdout"]).strip()


async def test_sandbox_has_eth0_its_address_and_a_default_route(agent: Agent) -> None:
    sandbox = await agent.create()
    address = await address_of(agent, sandbox)
    network = record(agent, sandbox)
    link = ipaddress.ip_network(network["link"])
    assert address == str(link[2]) and ipaddress.ip_address(address) in ipaddress.ip_network(
        agent.settings.network_pool)
    probe = (
        "import fcntl, socket, struct\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"raw = fcntl.ioctl(s.fileno(), {SIOCGIFADDR}, struct.pack('256s', b'eth0'))\n"
        "print(socket.inet_ntoa(raw[20:24]))\n"
        "for line in open('/proc/net/route').read().splitlines()[1:]:\n"
        "    f = line.split()\n"
        "    if f[1] == '00000000':\n"
        "        print(f[0], socket.inet_ntoa(struct.pack('<L', int(f[2], 16))))\n"
        "print(open('/proc/sys/net/ipv6/conf/eth0/disable_ipv6').read().strip())\n")
    out = (await agent.exec(sandbox, "python3", "-c", probe))["stdout"].split("\n")
    assert out[:3] == [address, f"eth0 {link[1]}", "1"], out
    # The host end carries the gateway address.
    assert f"{link[1]}/30" in sh("ip", "-4", "-o", "addr", "show", "dev", network["ifname"])


async def test_the_host_reaches_a_service_inside_the_sandbox(agent: Agent) -> None:
    sandbox = await agent.create()
    address = await address_of(agent, sandbox)
    server = ("import socket\n"
              "s = socket.socket(); s.bind(('0.0.0.0', 8123)); s.listen()\n"
              "c, _ = s.accept(); c.sendall(b'hello from inside'); c.close()\n")
    r = await agent.client.post(f"/sandboxes/{sandbox}/commands",
                                json={"cmd": "python3", "args": ["-c", server]})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((address, 8123), timeout=2) as conn:
                assert conn.recv(100) == b"hello from inside"
                break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_the_host_itself_is_unreachable(agent: Agent) -> None:
    sandbox = await agent.create()
    gateway = str(ipaddress.ip_network(record(agent, sandbox)["link"])[1])
    loopback_only = listen("127.0.0.1")
    everywhere = listen("0.0.0.0")  # stands in for the agent's and control plane's ports
    try:
        assert (await connect_from(agent, sandbox, "127.0.0.1", port(loopback_only))
                ).startswith(EXPECTED_FAILURE)
        for address in (gateway, host_address()):
            assert host_connects(address, port(everywhere))  # the listener works...
            received_nothing(everywhere)
            outcome = await connect_from(agent, sandbox, address, port(everywhere))
            assert outcome.startswith(EXPECTED_FAILURE), (address, outcome)  # ...not from inside
        assert received_nothing(loopback_only) and received_nothing(everywhere)
    finally:
        loopback_only.close()
        everywhere.close()


async def test_another_sandbox_is_unreachable(agent: Agent) -> None:
    first, second = await agent.create(), await agent.create()
    second_address = await address_of(agent, second)
    listener = listen("0.0.0.0", Path(record(agent, second)["netns"]))
    try:
        assert host_connects(second_address, port(listener))
        received_nothing(listener)
        assert (await connect_from(agent, first, second_address, port(listener))
                ).startswith(EXPECTED_FAILURE)
        assert received_nothing(listener)
    finally:
        listener.close()


async def test_metadata_is_unreachable_even_with_internet(agent: Agent, world: World) -> None:
    sandbox = await agent.create(allowInternetAccess=True)
    metadata = listen(METADATA, world.netns)
    try:
        assert host_connects(METADATA, port(metadata))  # routed and answering
        received_nothing(metadata)
        assert (await connect_from(agent, sandbox, METADATA, port(metadata))
                ).startswith(EXPECTED_FAILURE)
        assert received_nothing(metadata)
    finally:
        metadata.close()


async def test_internet_access_on_and_off(agent: Agent, world: World) -> None:
    online = await agent.create()  # allowInternetAccess defaults to true
    offline = await agent.create(allowInternetAccess=False)
    internet = listen(world.internet_host, world.netns)
    try:
        assert await connect_from(agent, online, world.internet_host, port(internet)) == "connected"
        conn, peer = internet.accept()
        conn.close()
        assert peer[0] == world.host_side  # masqueraded behind the host
        assert (await connect_from(agent, offline, world.internet_host, port(internet))
                ).startswith(EXPECTED_FAILURE)
        assert received_nothing(internet)
    finally:
        internet.close()
    ruleset = sh("nft", "list", "table", "inet", agent.nft_table)
    assert f'"{record(agent, online)["ifname"]}"' in ruleset.split("set internet")[1].split("}")[0]
    assert f'"{record(agent, offline)["ifname"]}"' not in ruleset.split("set internet")[1].split(
        "}")[0]
    assert "masquerade" in ruleset
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"


async def test_dns_configuration(agent: Agent) -> None:
    sandbox = await agent.create()
    conf = (await agent.exec(sandbox, "cat", "/etc/resolv.conf"))["stdout"]
    expected = resolv.render(resolv.host_resolvers(agent.settings.network_dns))
    assert conf == expected
    assert all(not line.startswith("nameserver 127.") for line in conf.splitlines())
    # Read-only, even for root in the sandbox.
    write = await agent.exec(sandbox, "sh", "-c", "echo nameserver 1.2.3.4 > /etc/resolv.conf",
                             user="root")
    assert write["exitCode"] != 0


async def test_delete_leaves_nothing(agent: Agent) -> None:
    sandbox = await agent.create(allowInternetAccess=True)
    network = record(agent, sandbox)
    netns_name = Path(network["netns"]).name
    assert netns_name in sh("ip", "netns", "list")
    assert (await agent.client.delete(f"/sandboxes/{sandbox}")).status_code == 204
    assert netns_name not in sh("ip", "netns", "list")
    assert not (agent.settings.network_dir / sandbox).exists()
    ruleset = sh("nft", "list", "table", "inet", agent.nft_table)
    address = str(ipaddress.ip_network(network["link"])[2])
    assert f'"{network["ifname"]}" . {address}' not in ruleset
    # The kernel destroys the veth with the namespace, asynchronously.
    deadline = time.monotonic() + 5
    while sh("ip", "link", "show", network["ifname"], check=False):
        assert time.monotonic() < deadline, f"{network['ifname']} still exists"
        await asyncio.sleep(0.02)
