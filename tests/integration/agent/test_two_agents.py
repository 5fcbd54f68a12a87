"""Two agents on one machine, differing only in their data dirs (real crun, one network namespace).

Each names its cgroup parent, nftables table, veths, namespace pins and pool
after its own data dir (host_names.py); their sandboxes both get online, are
refused each other as the firewall promises, and a restart of one agent
leaves the other's sandbox and network alone. An agent never takes a pool
another one in its namespace holds.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from qbox.agent.app import create_app
from qbox.agent.host_names import HostNames
from qbox.agent.settings import AgentSettings
from qbox.core.errors import InternalError
from tests.integration.agent.conftest import (
    SECRET,
    Agent,
    RootfsStore,
    client_for,
    force_cleanup,
    start_agent,
)
from tests.integration.agent.nettools import (
    CONNECT,
    World,
    fake_world,
    host_connects,
    listen,
    port,
    received_nothing,
    sh,
)

pytestmark = pytest.mark.integration

CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def data_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    first = tmp_path / "agent-a"
    # Two tags draw the same default /20 once in 240 (the second agent would then refuse
    # to start, as it should): the test takes a second dir whose pool differs.
    second = next(candidate for n in range(10) if (candidate := tmp_path / f"agent-b{n}")
                  and HostNames.for_data_dir(candidate).default_pool
                  != HostNames.for_data_dir(first).default_pool)
    dirs = (first, second)
    try:
        yield dirs
    finally:
        for data_dir in dirs:
            force_cleanup(data_dir)


@pytest.fixture
def world() -> Iterator[World]:
    with fake_world() as made:
        yield made


@asynccontextmanager
async def running(data_dir: Path, rootfs: Path) -> AsyncIterator[Agent]:
    app, settings = await start_agent(data_dir, rootfs)
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield Agent(app, client, settings)


def record(agent: Agent, sandbox_id: str) -> dict:  # type: ignore[type-arg]
    path = agent.settings.network_dir / sandbox_id / "network.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def elements(table: str) -> str:
    return sh("nft", "list", "set", "inet", table, "sandboxes")


async def connect_from(agent: Agent, sandbox_id: str, address: str, to_port: int) -> str:
    result = await agent.exec(sandbox_id, "python3", "-c", CONNECT, address, str(to_port))
    return str(result["stdout"]).strip()


def address_of(network: dict) -> str:  # type: ignore[type-arg]
    return str(ipaddress.ip_network(network["link"])[2])


async def online_alone(agent: Agent, sandbox_id: str, world: World,
                       other: dict | None = None) -> None:  # type: ignore[type-arg]
    """The sandbox reaches the (fake) internet and is reached over its own link; the other
    agent's sandbox (its network record ``other``) it never reaches."""
    network = record(agent, sandbox_id)
    internet = listen(world.internet_host, world.netns)
    # Services in the sandboxes' namespaces, on their addresses.
    own = listen(address_of(network), Path(network["netns"]))
    try:
        assert await connect_from(agent, sandbox_id, world.internet_host,
                                  port(internet)) == "connected"
        internet.accept()[0].close()
        assert host_connects(address_of(network), port(own))  # over its veth and route
    finally:
        internet.close()
        own.close()
    if other is None:
        return
    theirs = listen(address_of(other), Path(other["netns"]))
    try:
        # Refused at once (ICMP from the host's firewall), not lost on the way.
        assert await connect_from(agent, sandbox_id, address_of(other),
                                  port(theirs)) == "failed 113"
        assert received_nothing(theirs)
    finally:
        theirs.close()


async def test_two_agents_share_no_name_and_one_restarting_leaves_the_other_alone(
        data_dirs: tuple[Path, Path], test_rootfs: Path, world: World) -> None:
    dir_a, dir_b = data_dirs
    names_a, names_b = HostNames.for_data_dir(dir_a), HostNames.for_data_dir(dir_b)
    async with running(dir_b, test_rootfs) as b:
        async with running(dir_a, test_rootfs) as a:
            sb_a = await a.create(allowInternetAccess=True)
            sb_b = await b.create(allowInternetAccess=True)
            net_a, net_b = record(a, sb_a), record(b, sb_b)

            # Every host-wide name is the agent's own.
            assert net_a["ifname"].startswith(names_a.ifname_prefix)
            assert net_b["ifname"].startswith(names_b.ifname_prefix)
            assert Path(net_a["netns"]).name == f"{names_a.netns_prefix}{sb_a}"
            assert Path(net_b["netns"]).name == f"{names_b.netns_prefix}{sb_b}"
            assert not ipaddress.ip_network(a.settings.network_pool).overlaps(
                ipaddress.ip_network(b.settings.network_pool))
            for names, sandbox_id, mine, theirs in ((names_a, sb_a, net_a, net_b),
                                                    (names_b, sb_b, net_b, net_a)):
                parent = CGROUP_ROOT / "memory" / names.cgroup_parent.strip("/")
                assert (parent / sandbox_id).is_dir()
                listed = elements(names.nft_table)
                assert mine["ifname"] in listed and theirs["ifname"] not in listed

            await online_alone(a, sb_a, world, net_b)
            await online_alone(b, sb_b, world, net_a)

        # Agent A has stopped, its sandbox running: its table and cgroup parent stay, and
        # B's sandbox still runs, online.
        assert net_a["ifname"] in elements(names_a.nft_table)
        assert (CGROUP_ROOT / "memory" / names_a.cgroup_parent.strip("/") / sb_a).is_dir()
        assert (await b.exec(sb_b, "true"))["exitCode"] == 0
        async with running(dir_a, test_rootfs) as a:
            # A adopts its own sandbox and nothing of B's.
            assert [s["id"] for s in (await a.client.get("/sandboxes")).json()] == [sb_a]
            assert (await a.exec(sb_a, "true"))["exitCode"] == 0
            assert (await b.exec(sb_b, "true"))["exitCode"] == 0
            assert net_b["ifname"] in elements(names_b.nft_table)
            assert net_b["ifname"] not in elements(names_a.nft_table)
            assert Path(f"/sys/class/net/{net_b['ifname']}").exists()
            await online_alone(b, sb_b, world, net_a)
            await online_alone(a, sb_a, world, net_b)
            assert (await a.client.delete(f"/sandboxes/{sb_a}")).status_code == 204

        # A stopped with no sandbox: its table and cgroup parent are gone, B's are not.
        assert sh("nft", "list", "table", "inet", names_a.nft_table, check=False) == ""
        assert not (CGROUP_ROOT / "memory" / names_a.cgroup_parent.strip("/")).exists()
        assert net_b["ifname"] in elements(names_b.nft_table)
        assert (CGROUP_ROOT / "memory" / names_b.cgroup_parent.strip("/") / sb_b).is_dir()
        await online_alone(b, sb_b, world)
        assert (await b.client.delete(f"/sandboxes/{sb_b}")).status_code == 204


async def test_an_agent_refuses_the_pool_of_another_agent_in_its_namespace(
        data_dirs: tuple[Path, Path], test_rootfs: Path) -> None:
    dir_a, dir_b = data_dirs
    async with running(dir_a, test_rootfs) as a:
        clash = AgentSettings(data_dir=dir_b, secret=SECRET, network_pool=a.settings.network_pool)
        app = create_app(clash, store=RootfsStore(test_rootfs))  # type: ignore[arg-type]
        table = HostNames.for_data_dir(dir_a).nft_table
        with pytest.raises(InternalError, match=f"table inet {table}"):
            async with app.router.lifespan_context(app):
                pass
        # Refused before touching anything: B made no table, A's sandboxes get online.
        assert sh("nft", "list", "table", "inet", HostNames.for_data_dir(dir_b).nft_table,
                  check=False) == ""
        sandbox_id = await a.create()
        assert record(a, sandbox_id)["ifname"] in elements(table)
        assert (await a.exec(sandbox_id, "true"))["exitCode"] == 0
        assert (await a.client.delete(f"/sandboxes/{sandbox_id}")).status_code == 204
