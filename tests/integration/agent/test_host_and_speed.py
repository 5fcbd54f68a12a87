"""Host preparation on the real machine, and the latency targets through the API."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from qbox.agent.hostprep import CgroupMode, prepare_host
from tests.integration.agent.conftest import Agent

pytestmark = pytest.mark.integration


def test_host_preparation_is_idempotent_and_leaves_crun_a_usable_host(test_rootfs: Path) -> None:
    first = prepare_host()
    second = prepare_host()
    assert first.ok and second.ok
    assert second.moved_controllers == []
    if second.layout.mode is CgroupMode.HYBRID:
        assert second.layout.unified_mount is not None
        assert Path(second.layout.unified_mount, "cgroup.controllers").read_text().split() == []


async def test_spawn_and_exec_latency_targets(agent: Agent) -> None:
    spawn = []
    for _ in range(10):
        started = time.perf_counter()
        sandbox = await agent.create()
        spawn.append(time.perf_counter() - started)
    execs = []
    for _ in range(40):
        started = time.perf_counter()
        assert (await agent.exec(sandbox, "true"))["exitCode"] == 0
        execs.append(time.perf_counter() - started)
    assert statistics.median(spawn) <= 0.150, spawn
    assert statistics.median(execs) <= 0.025, execs
