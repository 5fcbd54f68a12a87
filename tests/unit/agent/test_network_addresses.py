from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from qbox.agent.network.addresses import AddressPool
from qbox.core.errors import HostNoCapacityError


def test_slots_are_point_to_point_links_with_gateway_first() -> None:
    pool = AddressPool("10.213.0.0/16")
    assert pool.capacity == 16384
    first, second = pool.allocate(), pool.allocate()
    assert (first.link, first.gateway, first.address, first.ifname) == (
        IPv4Network("10.213.0.0/30"), IPv4Address("10.213.0.1"), IPv4Address("10.213.0.2"), "qb-0")
    assert (second.link, second.address, second.ifname) == (
        IPv4Network("10.213.0.4/30"), IPv4Address("10.213.0.6"), "qb-1")
    last = pool.lease(pool.capacity - 1)
    assert last.link == IPv4Network("10.213.255.252/30") and last.ifname == "qb-16383"


def test_no_reuse_while_in_use_and_round_robin_after_release() -> None:
    pool = AddressPool("10.0.0.0/28")  # four links
    leases = [pool.allocate() for _ in range(3)]
    assert len({lease.slot for lease in leases}) == 3
    pool.release(leases[0].slot)
    # The freed slot is not handed out again until the others have had their turn.
    assert pool.allocate().slot == 3
    assert pool.allocate().slot == 0
    assert pool.in_use == 4


def test_exhaustion_is_a_transient_capacity_error() -> None:
    pool = AddressPool("10.0.0.0/29")  # two links
    pool.allocate()
    pool.allocate()
    with pytest.raises(HostNoCapacityError) as caught:
        pool.allocate()
    assert caught.value.status == 503 and caught.value.transient


def test_reserve_marks_a_slot_found_after_a_restart() -> None:
    pool = AddressPool("10.0.0.0/28")
    assert pool.reserve(1).address == IPv4Address("10.0.0.6")
    with pytest.raises(ValueError):
        pool.reserve(1)
    assert {pool.allocate().slot for _ in range(3)} == {0, 2, 3}


@pytest.mark.parametrize("cidr", ["10.0.0.0/31", "fd00::/64", "10.0.0.1/24", "nonsense"])
def test_unusable_pools_are_refused(cidr: str) -> None:
    with pytest.raises(ValueError):
        AddressPool(cidr)


def test_interface_names_fit_the_kernel_limit() -> None:
    assert len(AddressPool("10.0.0.0/8").lease(2 ** 22 - 1).ifname) <= 15
    with pytest.raises(ValueError):
        AddressPool("10.0.0.0/8", ifname_prefix="qbox-sandbox-")
