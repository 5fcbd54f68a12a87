"""A pooled sandbox's claim with real crun: its cgroup limits really shrink (a process that
fitted before is OOM-killed after), its envs reach new commands, and it only shrinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.agent.conftest import Agent

pytestmark = pytest.mark.integration

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Touches every page of 200 MiB (bytes * n writes them all).
ALLOCATE = "b = b'x' * (200 << 20); print(len(b) >> 20)"


def cgroup_file(agent: Agent, sandbox_id: str, v1: str, v2: str) -> str:
    """The sandbox's cgroup file ``v1`` (``controller/file``) or, on cgroup v2, ``v2``."""
    controller, name = v1.split("/")
    for path in (CGROUP_ROOT / controller / agent.cgroup_parent / sandbox_id / name,
                 CGROUP_ROOT / agent.cgroup_parent / sandbox_id / v2):
        if path.is_file():
            return path.read_text().strip()
    raise AssertionError(f"no {v1} or {v2} for {sandbox_id}")


async def test_a_claim_lowers_the_memory_limit_for_real(agent: Agent) -> None:
    sandbox_id = await agent.create(memoryMb=512, vcpus=2)
    fits = await agent.exec(sandbox_id, "python3", "-c", ALLOCATE)
    assert fits["exitCode"] == 0 and fits["stdout"] == "200\n", fits
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/claim",
                                json={"envs": {}, "vcpus": 1, "memoryMb": 128})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == sandbox_id and r.json()["status"] == "running"
    assert cgroup_file(agent, sandbox_id, "memory/memory.limit_in_bytes",
                       "memory.max") == str(128 << 20)
    quota = cgroup_file(agent, sandbox_id, "cpu/cpu.cfs_quota_us", "cpu.max").split()[0]
    period = cgroup_file(agent, sandbox_id, "cpu/cpu.cfs_period_us", "cpu.max").split()[-1]
    assert int(quota) == int(period)  # one vCPU now, two at boot
    killed = await agent.exec(sandbox_id, "python3", "-c", ALLOCATE)
    assert killed["exitCode"] != 0 and killed.get("oomKilled") is True, killed
    # The sandbox itself lives on.
    assert (await agent.exec(sandbox_id, "true"))["exitCode"] == 0


async def test_a_claim_replaces_the_envs_of_later_commands(agent: Agent) -> None:
    sandbox_id = await agent.create(envs={"A": "boot", "OLD": "gone"})
    before = await agent.exec(sandbox_id, "sh", "-c", "echo $A-$OLD-$B")
    assert before["stdout"] == "boot-gone-\n"
    r = await agent.client.post(f"/sandboxes/{sandbox_id}/claim", json={
        "envs": {"A": "claimed", "B": "new"}, "vcpus": 1, "memoryMb": 512,
        "deadlineAt": "2099-01-01T00:00:00.000000Z"})
    assert r.status_code == 200, r.text
    after = await agent.exec(sandbox_id, "sh", "-c", "echo $A-$OLD-$B")
    assert after["stdout"] == "claimed--new\n"


async def test_a_claim_only_shrinks(agent: Agent, sandbox: str) -> None:
    for body in ({"vcpus": 2, "memoryMb": 512}, {"vcpus": 1, "memoryMb": 1024}):
        r = await agent.client.post(f"/sandboxes/{sandbox}/claim", json={"envs": {}, **body})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", r.text
    r = await agent.client.post("/sandboxes/sb_nosuchsandbox/claim",
                                json={"vcpus": 1, "memoryMb": 64})
    assert r.status_code == 404 and r.json()["error"]["code"] == "sandbox_not_found"
