"""Admission control's decision on its own (services/admission.py: place): given hosts with
their capacity and load and a request, the host that takes it or why none does."""

from __future__ import annotations

import pytest

from qbox.protocol.host import Health
from qbox.server.db.tables import Host
from qbox.server.services.admission import HostCapacity, HostLoad, Overcommit, Resources, Shortfall, place

GIB = 1024
POLICY = Overcommit(cpu=4.0, memory=1.0, disk_reserve_mb=4 * GIB)
NOTHING = Resources(0, 0, 0)


def load(host_id: str = "h1", reserved: Resources = NOTHING, **capacity: int) -> HostLoad:
    cap = {"vcpus": 2, "memory_mb": 24 * GIB, "disk_total_mb": 250 * GIB, "disk_free_mb": 80 * GIB, **capacity}
    return HostLoad(host_id, HostCapacity(**cap), reserved)


def test_a_request_that_fits_goes_to_the_first_host_with_room() -> None:
    full = load("h1", Resources(8, 0, 0))
    assert place([full, load("h2")], Resources(1, 512, 2048), POLICY) == "h2"
    assert place([load("h1"), load("h2")], Resources(1, 512, 2048), POLICY) == "h1"


@pytest.mark.parametrize(("reserved", "request_", "resource", "capacity"), [
    # 2 CPUs x 4.0 overcommit = 8 vCPUs.
    (Resources(8, 0, 0), Resources(1, 64, 64), "vcpus", 8),
    # 24 GiB x 1.0.
    (Resources(0, 20 * GIB, 0), Resources(1, 5 * GIB, 64), "memoryMb", 24 * GIB),
    # 80 GiB free, less the 4 GiB reserve.
    (Resources(0, 0, 60 * GIB), Resources(1, 64, 17 * GIB), "diskMb", 76 * GIB),
])
def test_the_first_resource_short_is_named(reserved: Resources, request_: Resources, resource: str,
                                           capacity: int) -> None:
    found = place([load(reserved=reserved)], request_, POLICY)
    assert isinstance(found, list)
    assert found == [Shortfall("h1", resource, getattr(request_, {"vcpus": "vcpus", "memoryMb": "memory_mb",
                                                                  "diskMb": "disk_mb"}[resource]),
                               getattr(reserved, {"vcpus": "vcpus", "memoryMb": "memory_mb",
                                                  "diskMb": "disk_mb"}[resource]), capacity)]


def test_exactly_full_still_fits_and_overcommit_scales() -> None:
    assert place([load(reserved=Resources(7, 0, 0))], Resources(1, 64, 64), POLICY) == "h1"
    lenient = Overcommit(cpu=8.0, memory=1.5, disk_reserve_mb=0)
    assert place([load(reserved=Resources(15, 35 * GIB, 0))], Resources(1, GIB, 64), lenient) == "h1"


def test_what_the_sandbox_disks_already_hold_is_not_counted_twice() -> None:
    # 20 GiB of the live sandboxes' reservations is written: free space is 20 GiB lower.
    written = load(reserved=Resources(0, 0, 40 * GIB), disk_free_mb=60 * GIB, sandbox_disks_mb=20 * GIB)
    assert place([written], Resources(1, 64, 36 * GIB), POLICY) == "h1"
    assert isinstance(place([written], Resources(1, 64, 37 * GIB), POLICY), list)


def test_an_agent_without_a_disk_report_is_checked_on_cpu_and_memory_only() -> None:
    unknown = HostLoad("h1", HostCapacity(vcpus=2, memory_mb=GIB), Resources(0, 0, 10**9))
    assert place([unknown], Resources(1, 512, 10**6), POLICY) == "h1"


def test_no_host_is_an_empty_refusal() -> None:
    assert place([], Resources(1, 64, 64), POLICY) == []


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
