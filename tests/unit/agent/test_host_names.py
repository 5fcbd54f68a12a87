"""The per-data-dir names of an agent's host-wide objects, and the pool it gets by default."""

from __future__ import annotations

import hashlib
import os
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from qbox.agent import cgroups
from qbox.agent.host_names import (
    DEFAULT_DATA_DIR,
    DEFAULT_POOL,
    HostNames,
    data_dir_tag,
    default_pool,
    tagged_pools,
)
from qbox.agent.isolation import IsolationPolicy
from qbox.agent.network.addresses import IFNAMSIZ, AddressPool
from qbox.agent.settings import AgentSettings
from qbox.agent.spec import SandboxConfig, oci_config


def test_the_default_data_dir_keeps_the_names_qbox_always_used() -> None:
    names = HostNames.for_data_dir(DEFAULT_DATA_DIR)
    assert names.tag == ""
    assert (names.cgroup_parent, names.nft_table, names.ifname_prefix, names.netns_prefix) == (
        "/qbox", "qbox", "qb-", "qbox-")
    assert names.default_pool == "10.213.0.0/16"
    assert AgentSettings().network_pool == "10.213.0.0/16"
    assert AgentSettings().data_dir == DEFAULT_DATA_DIR


def test_another_data_dir_gets_a_tag_of_its_resolved_path(tmp_path: Path) -> None:
    real = tmp_path / "agent-a"
    real.mkdir()
    tag = hashlib.sha256(os.path.realpath(real).encode()).hexdigest()[:6]
    assert data_dir_tag(real) == tag
    (tmp_path / "link").symlink_to(real)
    # Every spelling of the same dir, and a restart, give the same names.
    assert data_dir_tag(tmp_path / "link") == data_dir_tag(tmp_path / "x" / ".." / "agent-a") == tag
    names = HostNames.for_data_dir(real)
    assert (names.cgroup_parent, names.nft_table, names.ifname_prefix, names.netns_prefix) == (
        f"/qbox-{tag}", f"qbox_{tag}", f"qb{tag}-", f"qbox-{tag}-")


def test_two_data_dirs_share_no_name(tmp_path: Path) -> None:
    a, b = HostNames.for_data_dir(tmp_path / "a"), HostNames.for_data_dir(tmp_path / "b")
    default = HostNames.for_data_dir(DEFAULT_DATA_DIR)
    for one, other in ((a, b), (a, default), (b, default)):
        assert one.cgroup_parent != other.cgroup_parent and one.nft_table != other.nft_table
        assert one.netns_prefix != other.netns_prefix
        # No interface prefix starts another: each agent's "prefix*" wildcard is its own.
        assert not one.ifname_prefix.startswith(other.ifname_prefix)
        assert not other.ifname_prefix.startswith(one.ifname_prefix)


def test_tagged_interface_names_fit_the_kernel_limit(tmp_path: Path) -> None:
    names = HostNames.for_data_dir(tmp_path)
    pool = AddressPool(names.default_pool, names.ifname_prefix)
    assert len(pool.lease(pool.capacity - 1).ifname) <= IFNAMSIZ
    # A /12 set by hand still fits; a /10 does not and is refused up front.
    AddressPool("10.0.0.0/12", names.ifname_prefix)
    with pytest.raises(ValueError, match="too long"):
        AddressPool("10.0.0.0/10", names.ifname_prefix)


def test_tagged_default_pools_are_20s_beside_the_default_one() -> None:
    pools = tagged_pools()
    assert len(pools) == 240 and all(p.prefixlen == 20 for p in pools)
    assert not any(p.overlaps(DEFAULT_POOL) for p in pools)
    assert len(set(pools)) == len(pools)
    assert default_pool("") == DEFAULT_POOL
    assert default_pool("000000") == IPv4Network("10.208.0.0/20")
    assert default_pool("0000ef") == pools[239] and default_pool("0000f0") == pools[0]
    # Tags spread over the candidates.
    chosen = {default_pool(f"{n:06x}") for n in range(0, 0xFFFFFF, 0x10001)}
    assert len(chosen) > 200


def test_settings_fill_in_the_data_dirs_pool_unless_one_is_set(tmp_path: Path) -> None:
    derived = AgentSettings(data_dir=tmp_path)
    assert derived.network_pool == HostNames.for_data_dir(tmp_path).default_pool
    assert IPv4Network(derived.network_pool).subnet_of(IPv4Network("10.208.0.0/12"))
    assert AgentSettings(data_dir=tmp_path, network_pool="10.99.0.0/20").network_pool == \
        "10.99.0.0/20"


def test_sandboxes_and_their_oom_counter_live_under_the_agents_cgroup_parent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = HostNames.for_data_dir(tmp_path)
    policy = IsolationPolicy.from_settings(AgentSettings(data_dir=tmp_path, seccomp=False))
    assert policy.cgroup_parent == names.cgroup_parent
    config = oci_config(SandboxConfig(id="sb_x", rootfs=tmp_path / "rootfs", hostname="x",
                                      init_source=Path("/init"), vcpus=1, memory_mb=64,
                                      cgroup_parent=policy.cgroup_parent))
    assert config["linux"]["cgroupsPath"] == f"{names.cgroup_parent}/sb_x"
    read: list[str] = []
    monkeypatch.setattr(cgroups, "oom_kills", lambda path: read.append(path) or 2)
    assert policy.oom_counter("sb_x")() == 2
    assert read == [f"{names.cgroup_parent}/sb_x"]


def test_an_agents_cgroup_parent_goes_only_when_empty(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    mine, other = "/qbox-aaaaaa", "/qbox-bbbbbb"
    (root / "memory" / "qbox-aaaaaa" / "sb_kept").mkdir(parents=True)
    (root / "pids" / "qbox-aaaaaa").mkdir(parents=True)
    (root / "pids" / "qbox-bbbbbb").mkdir(parents=True)
    cgroups.remove_parent(mine, root)
    assert (root / "memory" / "qbox-aaaaaa" / "sb_kept").is_dir()  # a sandbox still in it
    assert not (root / "pids" / "qbox-aaaaaa").exists()
    assert (root / "pids" / "qbox-bbbbbb").is_dir()  # another agent's
    cgroups.remove_parent(other, root)
    assert not (root / "pids" / "qbox-bbbbbb").exists()


def test_a_tagged_agents_fallbacks_are_every_other_pool_after_its_own() -> None:
    names = HostNames.for_data_dir(Path("/srv/qbox-a"))
    fallbacks = names.fallback_pools
    pools = [str(pool) for pool in tagged_pools()]
    assert len(fallbacks) == len(pools) - 1 and names.default_pool not in fallbacks
    assert set(fallbacks) | {names.default_pool} == set(pools)
    assert fallbacks[0] == pools[(pools.index(names.default_pool) + 1) % len(pools)]
    # The default data dir's /16 is never moved.
    assert HostNames("").fallback_pools == ()
