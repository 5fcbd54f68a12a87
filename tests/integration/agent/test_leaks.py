"""200 sandboxes spawned and killed through the agent API leave nothing behind.

Checked from the host's side, not through the agent's own bookkeeping:
mounts, network namespaces, veth interfaces, cgroups, nft set elements,
processes, runtime containers and state directories. Another agent may be
running on this host, so only what *these* sandboxes had is looked for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import time
from pathlib import Path

import pytest

from qbox.agent import mounts
from qbox.agent.host_names import HostNames
from tests.integration.agent.conftest import Agent
from tests.integration.agent.nettools import sh

pytestmark = pytest.mark.integration

SANDBOXES = 200
AT_ONCE = 10
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _network_of(agent: Agent, sandbox_id: str) -> tuple[str, str, int, str]:
    record = json.loads((agent.settings.network_dir / sandbox_id / "network.json").read_text())
    ifname = record["ifname"]
    ifindex = int(Path(f"/sys/class/net/{ifname}/ifindex").read_text())
    return ifname, str(ipaddress.ip_network(record["link"])[2]), ifindex, record["netns"]


def _cgroups(parent: str, ids: set[str]) -> list[Path]:
    parents = [CGROUP_ROOT / parent, *CGROUP_ROOT.glob(f"*/{parent}")]
    return [child for parent in parents if parent.is_dir() for child in parent.iterdir()
            if child.name in ids]


def _processes_in(parent: str, ids: set[str]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if any(f"/{parent}/{sandbox_id}" in cgroup for sandbox_id in ids):
            found.append(int(entry.name))
    return found


def _children() -> list[str]:
    me, found = str(os.getpid()), []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me:
            found.append(stat)
    return found


def _elements(table: str) -> tuple[set[tuple[str, str]], set[str]]:
    pairs: set[tuple[str, str]] = set()
    names: set[str] = set()
    for set_name in ("sandboxes", "internet"):
        listing = json.loads(sh("nft", "-j", "list", "set", "inet", table, set_name))
        for item in listing["nftables"]:
            for element in item.get("set", {}).get("elem", []):
                if set_name == "sandboxes":
                    pairs.add(tuple(element["concat"]))  # type: ignore[arg-type]
                else:
                    names.add(element)
    return pairs, names


async def test_spawning_and_killing_200_sandboxes_leaks_nothing(agent: Agent) -> None:
    children_before = len(_children())
    ids: set[str] = set()
    networks: list[tuple[str, str, int, str]] = []
    started = time.monotonic()
    for batch in range(SANDBOXES // AT_ONCE):
        created = await asyncio.gather(*(agent.create(allowInternetAccess=(batch + i) % 2 == 0)
                                         for i in range(AT_ONCE)))
        ids.update(created)
        networks += [_network_of(agent, sandbox_id) for sandbox_id in created]
        statuses = await asyncio.gather(*(agent.client.delete(f"/sandboxes/{sandbox_id}")
                                          for sandbox_id in created))
        assert {r.status_code for r in statuses} == {204}
    elapsed = time.monotonic() - started
    assert len(ids) == SANDBOXES

    assert (await agent.client.get("/sandboxes")).json() == []
    data = str(agent.settings.data_dir) + "/"
    netns_paths = {netns for *_, netns in networks}
    leaked_mounts = [m.mount_point for m in mounts.read_mountinfo()
                     if m.mount_point.startswith(data) or m.mount_point in netns_paths]
    assert leaked_mounts == []
    assert [p for p in netns_paths if Path(p).exists()] == []
    assert list(agent.settings.sandboxes_dir.iterdir()) == []
    assert not agent.settings.network_dir.exists() or list(agent.settings.network_dir.iterdir()) == []
    names = HostNames.for_data_dir(agent.settings.data_dir)
    parent = names.cgroup_parent.strip("/")
    assert _cgroups(parent, ids) == []
    assert _processes_in(parent, ids) == []
    # crun's helpers become the agent's zombies; its orphan sweep reaps them within seconds.
    deadline = time.monotonic() + 10
    while len(_children()) > children_before:
        assert time.monotonic() < deadline, _children()
        await asyncio.sleep(0.1)
    runtime_root = agent.settings.runtime_root
    assert [p.name for p in runtime_root.glob("*/sb_*")] == []

    pairs, elements = _elements(names.nft_table)
    ours = {(ifname, address) for ifname, address, _, _ in networks}
    assert pairs & ours == set()
    # An interface name may already be another agent's again; only a name that no longer exists
    # would be a leftover of ours.
    assert {n for n in elements & {ifname for ifname, *_ in networks}
            if not Path(f"/sys/class/net/{n}").exists()} == set()

    # The kernel destroys the veths with their namespaces, asynchronously.
    indexes = {ifindex for _, _, ifindex, _ in networks}
    deadline = time.monotonic() + 10
    while True:
        live = {int(p.read_text()) for p in Path("/sys/class/net").glob(f"{names.ifname_prefix}*/ifindex")}
        if not live & indexes:
            break
        assert time.monotonic() < deadline, f"{len(live & indexes)} veths still exist"
        await asyncio.sleep(0.05)
    print(f"{SANDBOXES} spawns and kills in {elapsed:.1f} s")
