"""HostNetwork's bookkeeping with the kernel replaced: slots, retries, records, reconcile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qbox.agent.network import links, manager, netns
from qbox.agent.network.addresses import Lease
from qbox.agent.network.manager import HostNetwork, NetworkConfig
from qbox.agent.network.nftables import NftError
from qbox.core.errors import InternalError


class FakeNft:
    name = "fake"

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, script: str) -> None:
        self.scripts.append(script)

    def query(self, script: str) -> dict[str, Any]:
        return {"nftables": []}


class FakeKernel:
    """Namespaces are files; host interface names a set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ifnames: set[str] = set()
        self.namespaces: set[Path] = set()
        monkeypatch.setattr(manager, "enable_ip_forwarding", lambda: False)
        monkeypatch.setattr(netns, "prepare_dir", lambda directory: None)
        monkeypatch.setattr(netns, "create", self.create)
        monkeypatch.setattr(netns, "remove", self.namespaces.discard)
        monkeypatch.setattr(netns, "exists", lambda path: path in self.namespaces)
        monkeypatch.setattr(links, "open_netlink", lambda: None)
        monkeypatch.setattr(links, "host_netns_fd", lambda: -1)
        monkeypatch.setattr(links, "host_networks", lambda ipr, prefix: [])
        monkeypatch.setattr(links, "link_names", lambda ipr: set(self.ifnames))
        monkeypatch.setattr(links, "configure_host", lambda ipr, lease: None)

    def create(self, path: Path, setup: Any) -> None:
        lease: Lease = setup.args[0]
        if lease.ifname in self.ifnames:
            raise links.InterfaceExistsError(lease.ifname)
        self.ifnames.add(lease.ifname)
        self.namespaces.add(path)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    return FakeKernel(monkeypatch)


def _network(tmp_path: Path, nft: FakeNft) -> HostNetwork:
    config = NetworkConfig(state_dir=tmp_path / "network", pool="10.213.0.0/28",
                           dns=("192.0.2.53",), netns_dir=tmp_path / "netns")
    return HostNetwork(config, nft_factory=lambda: nft)


async def test_attach_skips_a_slot_whose_interface_still_exists(
        tmp_path: Path, kernel: FakeKernel) -> None:
    kernel.ifnames.add("qb-0")  # another agent's, or one the kernel is still destroying
    nft = FakeNft()
    network = _network(tmp_path, nft)
    await network.start(set())
    attachment = await network.attach("sb_aaaaaaaa", internet=True)
    assert attachment.address == "10.213.0.6"
    assert attachment.netns_path == tmp_path / "netns" / "qbox-sb_aaaaaaaa"
    assert attachment.resolv_conf is not None
    assert attachment.resolv_conf.read_text().splitlines()[1] == "nameserver 192.0.2.53"
    # The other owner's elements were never touched.
    assert not any('"qb-0"' in script for script in nft.scripts)
    assert nft.scripts[-1] == ('add element inet qbox sandboxes { "qb-1" . 10.213.0.6 }\n'
                               'add element inet qbox internet { "qb-1" }\n')
    await network.close()


async def test_detach_removes_elements_namespace_and_record(
        tmp_path: Path, kernel: FakeKernel) -> None:
    nft = FakeNft()
    network = _network(tmp_path, nft)
    await network.start(set())
    attachment = await network.attach("sb_aaaaaaaa", internet=False)
    await network.detach("sb_aaaaaaaa")
    await network.detach("sb_aaaaaaaa")  # idempotent
    assert 'delete element inet qbox sandboxes { "qb-0" . 10.213.0.2 }' in nft.scripts[-1]
    assert attachment.netns_path not in kernel.namespaces
    assert not (tmp_path / "network" / "sb_aaaaaaaa").exists()
    assert network.get("sb_aaaaaaaa") is None
    await network.close()


async def test_start_keeps_held_sandboxes_and_removes_other_leftovers(
        tmp_path: Path, kernel: FakeKernel) -> None:
    first = _network(tmp_path, FakeNft())
    await first.start(set())
    kept = await first.attach("sb_keptkept", internet=True)
    gone = await first.attach("sb_gonegone", internet=True)
    await first.close()

    nft = FakeNft()
    second = _network(tmp_path, nft)
    attachments = await second.start({"sb_keptkept"})
    assert attachments == {"sb_keptkept": kept}
    assert gone.netns_path not in kernel.namespaces and kept.netns_path in kernel.namespaces
    assert not (tmp_path / "network" / "sb_gonegone").exists()
    assert 'add element inet qbox sandboxes { "qb-0" . 10.213.0.2 }' in "".join(nft.scripts)
    # The kept sandbox's slot stays taken: the next one gets a fresh one.
    kernel.ifnames.discard("qb-1")
    assert (await second.attach("sb_newnewnew", internet=True)).address != kept.address
    await second.close()


async def test_a_failed_build_leaves_nothing(tmp_path: Path, kernel: FakeKernel,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ipr: object, lease: Lease) -> None:
        raise OSError("netlink said no")

    monkeypatch.setattr(links, "configure_host", broken)
    network = _network(tmp_path, FakeNft())
    await network.start(set())
    with pytest.raises(OSError):
        await network.attach("sb_aaaaaaaa", internet=True)
    assert kernel.namespaces == set() and list((tmp_path / "network").iterdir()) == []
    await network.close()


class TablesNft(FakeNft):
    """An nft whose namespace holds other agents' tables, each claiming a pool."""

    def __init__(self, pools: dict[str, str | None]) -> None:
        super().__init__()
        self.pools = pools

    def query(self, script: str) -> dict[str, Any]:
        if script.startswith("list tables"):
            return {"nftables": [{"metainfo": {}}, *({"table": {"family": "inet", "name": name}}
                                                      for name in self.pools)]}
        if not script.startswith("list set") or script.split()[4] != "pool":
            return {"nftables": []}
        table = script.split()[3]
        pool = self.pools.get(table)
        if pool is None:
            raise NftError(f"no set pool in {table}")
        addr, length = pool.split("/")
        return {"nftables": [{"set": {"name": "pool", "table": table,
                                      "elem": [{"prefix": {"addr": addr, "len": int(length)}}]}}]}


async def test_start_refuses_a_pool_another_agents_table_claims(
        tmp_path: Path, kernel: FakeKernel) -> None:
    nft = TablesNft({"qbox_aaaaaa": "10.213.0.0/20"})
    network = _network(tmp_path, nft)
    with pytest.raises(InternalError, match=r"inet qbox_aaaaaa.*QBOX_NETWORK_POOL"):
        await network.start(set())
    await network.close()
    # Refused before programming anything, and its failed start deletes no table.
    assert nft.scripts == []


async def test_start_accepts_other_agents_with_pools_of_their_own(
        tmp_path: Path, kernel: FakeKernel) -> None:
    # A table without a pool set (an older qbox's) is passed over, and only qbox tables count.
    nft = TablesNft({"qbox_aaaaaa": "10.208.16.0/20", "qbox_bbbbbb": None,
                     "filter": "10.213.0.0/16"})
    network = _network(tmp_path, nft)
    await network.start(set())
    assert "add element inet qbox pool { 10.213.0.0/28 }" in nft.scripts[0]
    await network.close()


async def test_an_agent_stopping_with_no_sandbox_removes_its_table_and_only_then(
        tmp_path: Path, kernel: FakeKernel) -> None:
    nft = FakeNft()
    network = _network(tmp_path, nft)
    await network.start(set())
    await network.attach("sb_aaaaaaaa", internet=True)
    await network.close()
    assert not any(script.startswith("delete table") for script in nft.scripts)
    nft = FakeNft()
    again = _network(tmp_path, nft)
    await again.start({"sb_aaaaaaaa"})
    await again.detach("sb_aaaaaaaa")
    await again.close()
    assert nft.scripts[-1] == "delete table inet qbox\n"


async def test_names_come_from_the_config(tmp_path: Path, kernel: FakeKernel) -> None:
    config = NetworkConfig(state_dir=tmp_path / "network", pool="10.208.16.0/28",
                           netns_dir=tmp_path / "netns", ifname_prefix="qbabc123-",
                           table="qbox_abc123", netns_prefix="qbox-abc123-")
    nft = FakeNft()
    network = HostNetwork(config, nft_factory=lambda: nft)
    await network.start(set())
    attachment = await network.attach("sb_aaaaaaaa", internet=True)
    assert attachment.netns_path == tmp_path / "netns" / "qbox-abc123-sb_aaaaaaaa"
    assert kernel.ifnames == {"qbabc123-0"}
    assert nft.scripts[-1] == ('add element inet qbox_abc123 sandboxes '
                               '{ "qbabc123-0" . 10.208.16.2 }\n'
                               'add element inet qbox_abc123 internet { "qbabc123-0" }\n')
    await network.close()


def _defaulted(tmp_path: Path, nft: FakeNft) -> HostNetwork:
    """An agent whose pool is a default: it may move to its fallbacks."""
    config = NetworkConfig(state_dir=tmp_path / "network", pool="10.208.16.0/28",
                           netns_dir=tmp_path / "netns", table="qbox_cccccc",
                           fallback_pools=("10.208.32.0/28", "10.208.48.0/28"))
    return HostNetwork(config, nft_factory=lambda: nft)


async def test_a_default_pool_another_agent_holds_moves_to_the_next_free_one(
        tmp_path: Path, kernel: FakeKernel) -> None:
    nft = TablesNft({"qbox_aaaaaa": "10.208.16.0/20", "qbox_bbbbbb": "10.208.32.0/24"})
    network = _defaulted(tmp_path, nft)
    await network.start(set())
    assert "add element inet qbox_cccccc pool { 10.208.48.0/28 }" in nft.scripts[0]
    await network.close()


async def test_a_restart_keeps_the_pool_its_own_table_holds(tmp_path: Path, kernel: FakeKernel) -> None:
    # It moved to a fallback before; the agent that held its default has gone since.
    nft = TablesNft({"qbox_cccccc": "10.208.32.0/28"})
    network = _defaulted(tmp_path, nft)
    await network.start(set())
    assert "add element inet qbox_cccccc pool { 10.208.32.0/28 }" in nft.scripts[0]
    await network.close()


async def test_with_every_fallback_taken_the_start_is_refused(tmp_path: Path, kernel: FakeKernel) -> None:
    nft = TablesNft({"qbox_aaaaaa": "10.208.0.0/18"})
    network = _defaulted(tmp_path, nft)
    with pytest.raises(InternalError, match="QBOX_NETWORK_POOL"):
        await network.start(set())
    await network.close()
