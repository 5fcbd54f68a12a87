"""Admission control through the app (issue 13, finding 8), with an agent that reports the
host of the finding (2 CPUs, 24 GiB, 80 GiB free on the data disk). The decision alone:
test_admission_decision.py."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from qbox.agent.runtime.base import RuntimeFailure
from qbox.server.db.tables import Host, Sandbox
from tests.unit.server.conftest import Harness, make_harness
from tests.unit.server.agent_host import RunningAgent
from tests.unit.server.helpers import db_session

GIB = 1024
# The finding's host and request.
SMALL_HOST = {"vcpus": 2, "memoryMb": 24 * GIB, "diskTotalMb": 250 * GIB, "diskFreeMb": 80 * GIB,
              "sandboxDisksMb": 0}
BIG_SPAWN = {"templateId": "tpl_python", "vcpus": 4, "memoryMb": 8 * GIB, "diskSizeMb": 20 * GIB}


@pytest.fixture
def small_host(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    with RunningAgent(tmp_path / "agent") as agent:
        agent.capacity = dict(SMALL_HOST)
        yield from make_harness(tmp_path, agent, database=database)


def big_spawn(h: Harness) -> Any:
    return h.client.post("/v1/sandboxes?wait=true&waitTimeoutSec=5", json=BIG_SPAWN, headers=h.auth())


def live(h: Harness) -> list[str]:
    with db_session(h.settings.data_dir) as session:
        return list(session.scalars(select(Sandbox.id).where(Sandbox.status.in_(("booting", "running")))))


def test_finding_8_four_big_spawns_on_a_small_host_stop_at_capacity(small_host: Harness) -> None:
    # Before: all four ran (16 vCPU, 32 GiB, 80 GiB of disk on a 2-CPU, 24 GiB host).
    codes = [big_spawn(small_host) for _ in range(4)]
    assert [r.status_code for r in codes] == [201, 201, 503, 503]
    refusal = codes[2]
    error = refusal.json()["error"]
    assert error["code"] == "host_no_capacity"
    assert error["details"]["transient"] is True and error["details"]["resource"] == "vcpus"
    assert error["details"]["reserved"] == 8 and error["details"]["capacity"] == 8
    assert error["details"]["requested"] == {"vcpus": 4, "memoryMb": 8 * GIB, "diskMb": 20 * GIB}
    assert refusal.headers["Retry-After"] == "5"
    # Nothing half-made: two rows, two sandboxes on the agent.
    assert len(live(small_host)) == 2 and len(small_host.agent.sandbox_ids()) == 2
    listed = small_host.client.get("/v1/sandboxes", headers=small_host.auth()).json()
    assert len(listed) == 2


def test_memory_decides_when_cpus_are_overcommitted_further(tmp_path: Path, database: str | None) -> None:
    with RunningAgent(tmp_path / "agent") as agent:
        agent.capacity = dict(SMALL_HOST)
        for h in make_harness(tmp_path, agent, database=database, overcommit_cpu=16.0):
            assert [big_spawn(h).status_code for _ in range(3)] == [201, 201, 201]
            r = big_spawn(h)
            assert (r.status_code, r.json()["error"]["details"]["resource"]) == (503, "memoryMb")


def test_then_disk_decides(tmp_path: Path, database: str | None) -> None:
    with RunningAgent(tmp_path / "disk-agent") as agent:
        agent.capacity = {**SMALL_HOST, "diskFreeMb": 50 * GIB}
        for h in make_harness(tmp_path / "disk", agent, database=database, overcommit_cpu=16.0):
            assert [big_spawn(h).status_code for _ in range(2)] == [201, 201]
            r = big_spawn(h)
            assert (r.status_code, r.json()["error"]["details"]["resource"]) == (503, "diskMb")


def test_capacity_comes_back_when_a_sandbox_ends(small_host: Harness) -> None:
    first = big_spawn(small_host).json()
    big_spawn(small_host)
    assert big_spawn(small_host).status_code == 503
    small_host.client.delete(f"/v1/sandboxes/{first['id']}", headers=small_host.auth())
    assert big_spawn(small_host).status_code == 201


def test_a_failed_boot_releases_its_reservation(small_host: Harness) -> None:
    small_host.agent.runtime.run_error = RuntimeFailure("boom")
    for _ in range(3):
        assert big_spawn(small_host).json()["status"] == "failed"
    small_host.agent.runtime.run_error = None
    assert [big_spawn(small_host).status_code for _ in range(2)] == [201, 201]


def test_concurrent_spawns_never_both_take_the_last_room(small_host: Harness) -> None:
    small_host.agent.runtime.run_delay = 0.05
    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(lambda _: big_spawn(small_host).status_code, range(12)))
    assert sorted(codes) == [201] * 2 + [503] * 10
    assert len(live(small_host)) == 2


def test_the_host_row_keeps_the_agents_last_report(small_host: Harness) -> None:
    big_spawn(small_host)
    with db_session(small_host.settings.data_dir) as session:
        host = session.scalars(select(Host)).one()
    assert (host.total_vcpus, host.total_memory_mb, host.disk_free_mb) == (2, 24 * GIB, 80 * GIB)
