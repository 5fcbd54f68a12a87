"""Measured usage: /proc/stat and /proc/meminfo read right, CPU over the interval between
measures, the data dir's filesystem; and /health carrying the figures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qbox.agent.usage import UsageMeter, busy_percent, cpu_times, memory_used_mb
from tests.unit.agent.conftest import AgentUnderTest

STAT = """cpu  {user} 0 {system} {idle} {iowait} 0 0 0 7 0
cpu0 1 2 3 4 5 6 7 8 9 10
intr 12345
"""
MEMINFO = """MemTotal:        8000000 kB
MemFree:          100000 kB
MemAvailable:    6000000 kB
Buffers:           20000 kB
"""


def _stat(user: int, system: int, idle: int, iowait: int) -> str:
    return STAT.format(user=user, system=system, idle=idle, iowait=iowait)


def test_cpu_times_count_idle_and_iowait_as_not_busy_and_guests_once() -> None:
    assert cpu_times(_stat(100, 50, 800, 50)) == (150, 1000)
    with pytest.raises(ValueError):
        cpu_times("intr 1\n")


def test_busy_percent_over_an_interval() -> None:
    assert busy_percent((150, 1000), (400, 1500)) == 50.0
    assert busy_percent((150, 1000), (150, 1000)) == 0.0  # no time passed
    assert busy_percent((0, 0), (1, 3)) == 33.3


def test_memory_used_is_total_minus_available() -> None:
    assert memory_used_mb(MEMINFO) == (8000000 - 6000000) // 1024


def test_the_meter_measures_cpu_since_its_last_measure(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "stat").write_text(_stat(100, 100, 800, 0))
    meter = UsageMeter(tmp_path, proc)
    assert meter.measure().cpu_percent == 20.0  # since boot
    (proc / "stat").write_text(_stat(190, 100, 810, 0))
    usage = meter.measure()
    assert usage.cpu_percent == 90.0  # 90 of the last 100 ticks
    disk = os.statvfs(tmp_path)
    assert usage.disk_total_mb == disk.f_blocks * disk.f_frsize // 2 ** 20
    assert 0 < usage.disk_used_mb <= usage.disk_total_mb
    assert usage.memory_used_mb == 1953


async def test_health_reports_the_live_figures(agent: AgentUnderTest) -> None:
    body = (await agent.client.get("/health")).json()
    assert body["hostname"] == os.uname().nodename
    assert body["images"] == [agent.digest]
    assert body["maxSandboxes"] == 1000 and body["labels"] == {}
    assert body["usage"]["memoryUsedMb"] > 0 and body["usage"]["diskTotalMb"] > 0
    assert body["capacity"]["vcpus"] >= 1


async def test_health_answers_when_usage_cannot_be_measured(
        agent: AgentUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable() -> None:
        raise FileNotFoundError("/proc/stat")

    monkeypatch.setattr(agent.app.state.agent.usage, "measure", unreadable)
    r = await agent.client.get("/health")
    assert r.status_code == 200 and r.json()["usage"] is None
    assert r.json()["images"] == [agent.digest]
