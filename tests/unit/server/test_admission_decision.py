"""What admission reads of a host: the figures of its last report, kept on its row (the
decision itself is services/scheduler.py's, tested in test_scheduler.py)."""

from __future__ import annotations

import pytest

from qbox.protocol.host import Health
from qbox.server.db.tables import Host
from qbox.server.services.hosts import record_report
from qbox.server.services.placement import capacity_of

GIB = 1024


def _host() -> Host:
    return Host(id="h1", hostname="h", address="a", status="ready", total_vcpus=3, total_memory_mb=4096,
                sandbox_disks_mb=0, runtimes=[], labels={}, images=[])


def _health(report: dict[str, object]) -> Health:
    """An agent's /health answer as the agent client reads it."""
    return Health.model_validate({"version": "0", "runtime": "fake", "runtimes": [], "sandboxes": 0,
                                  **report})


@pytest.mark.parametrize("health", [{}, {"capacity": None}, {"capacity": {"vcpus": 2}},
                                    {"capacity": {"vcpus": "x", "memoryMb": 1, "diskTotalMb": 1, "diskFreeMb": 1}}])
def test_a_missing_or_garbled_report_keeps_what_the_row_knew(health: dict[str, object]) -> None:
    row = _host()
    record_report(row, _health(health))
    assert (capacity_of(row).vcpus, capacity_of(row).memory_mb) == (3, 4096)
    assert capacity_of(row).disk_free_mb is None


def test_a_full_report_is_read_whole() -> None:
    row = _host()
    report = {"capacity": {"vcpus": 2, "memoryMb": 24 * GIB, "diskTotalMb": 250 * GIB, "diskFreeMb": 80 * GIB,
                           "sandboxDisksMb": 7},
              "usage": {"cpuPercent": 40.5, "memoryUsedMb": 1000, "diskUsedMb": 170 * GIB, "diskTotalMb": 250 * GIB},
              "images": ["sha256:b", "sha256:a", "sha256:b"], "maxSandboxes": 50, "labels": {"gpu": "true"}}
    record_report(row, _health(report))
    capacity = capacity_of(row)
    assert (capacity.vcpus, capacity.memory_mb, capacity.disk_total_mb, capacity.disk_free_mb,
            capacity.sandbox_disks_mb) == (2, 24 * GIB, 250 * GIB, 80 * GIB, 7)
    assert (row.cpu_percent, row.memory_used_mb, row.max_sandboxes) == (40.5, 1000, 50)
    assert row.images == ["sha256:a", "sha256:b"] and row.labels == {"gpu": "true"}
    assert row.runtimes == ["fake"]
