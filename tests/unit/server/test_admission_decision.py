"""What admission control reads of a host: its capacity from the agent's health report (the
decision itself is services/scheduler.py's, tested in test_scheduler.py)."""

from __future__ import annotations

import pytest

from qbox.protocol.host import Health
from qbox.server.db.tables import Host
from qbox.server.services.admission import HostCapacity

GIB = 1024


@pytest.mark.parametrize("health", [{}, {"capacity": None}, {"capacity": {"vcpus": 2}},
                                    {"capacity": {"vcpus": "x", "memoryMb": 1, "diskTotalMb": 1, "diskFreeMb": 1}}])
def test_a_missing_or_garbled_report_falls_back_to_the_hosts_row(health: dict[str, object]) -> None:
    row = Host(id="h1", hostname="h", address="a", status="online", total_vcpus=3, total_memory_mb=4096)
    assert HostCapacity.from_health(_health(health), row) == HostCapacity(vcpus=3, memory_mb=4096)


def _health(report: dict[str, object]) -> Health:
    """An agent's /health answer as the agent client reads it."""
    return Health.model_validate({"version": "0", "runtime": "fake", "runtimes": [], "sandboxes": 0,
                                  **report})


def test_a_full_report_is_read_whole() -> None:
    row = Host(id="h1", hostname="h", address="a", status="online", total_vcpus=3, total_memory_mb=4096)
    report = {"capacity": {"vcpus": 2, "memoryMb": 24 * GIB, "diskTotalMb": 250 * GIB, "diskFreeMb": 80 * GIB,
                           "sandboxDisksMb": 7}}
    assert HostCapacity.from_health(_health(report), row) == HostCapacity(2, 24 * GIB, 250 * GIB, 80 * GIB, 7)
