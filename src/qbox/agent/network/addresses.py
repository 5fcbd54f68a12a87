"""Sandbox addresses: a pool carved into point-to-point /30 links, one per sandbox.

Slot ``n`` of the pool is the n-th /30: the host side of the sandbox's veth
(``qb-<n>``) holds its first address (the sandbox's gateway), the sandbox's
``eth0`` the second. Because every sandbox sits on its own link, one sandbox
can reach another only through the host's forward path, where the firewall
refuses it: isolation between sandboxes is a routing fact, not a bridge
setting.

Slots are handed out round-robin rather than lowest-free: a deleted
sandbox's host interface disappears asynchronously (the kernel destroys it
with the namespace) and its conntrack entries age out, so an address is
reused as late as possible. Pure: unit-tested without root.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from qbox.core.errors import HostNoCapacityError

LINK_PREFIX = 30
IFNAME_PREFIX = "qb-"
IFNAMSIZ = 15  # the kernel's limit on an interface name, without the NUL


@dataclass(frozen=True)
class Lease:
    slot: int
    link: IPv4Network
    ifname: str

    @property
    def gateway(self) -> IPv4Address:
        return self.link.network_address + 1

    @property
    def address(self) -> IPv4Address:
        return self.link.network_address + 2


class AddressPool:
    """The /30 links of ``cidr``; which are in use is kept in memory (the
    network manager rebuilds it from its records on start)."""

    def __init__(self, cidr: str, ifname_prefix: str = IFNAME_PREFIX) -> None:
        network = ipaddress.ip_network(cidr, strict=True)
        if not isinstance(network, IPv4Network) or network.prefixlen > LINK_PREFIX:
            raise ValueError(f"the sandbox address pool must be an IPv4 network of /{LINK_PREFIX} "
                             f"or larger, not {cidr!r}")
        self.network = network
        self.capacity = 2 ** (LINK_PREFIX - network.prefixlen)
        self._prefix = ifname_prefix
        if len(self._ifname(self.capacity - 1)) > IFNAMSIZ:
            raise ValueError(f"interface prefix {ifname_prefix!r} is too long for this pool")
        self._used: set[int] = set()
        self._next = 0

    def _ifname(self, slot: int) -> str:
        return f"{self._prefix}{slot}"

    def lease(self, slot: int) -> Lease:
        if not 0 <= slot < self.capacity:
            raise ValueError(f"slot {slot} is outside the pool {self.network}")
        base = self.network.network_address + slot * 2 ** (32 - LINK_PREFIX)
        return Lease(slot, IPv4Network((base, LINK_PREFIX)), self._ifname(slot))

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> Lease:
        """The next free slot after the last one handed out."""
        if len(self._used) >= self.capacity:
            raise HostNoCapacityError(
                f"all {self.capacity} sandbox addresses of {self.network} are in use",
                details={"transient": True})
        slot = self._next
        while slot in self._used:
            slot = (slot + 1) % self.capacity
        self._used.add(slot)
        self._next = (slot + 1) % self.capacity
        return self.lease(slot)

    def reserve(self, slot: int) -> Lease:
        """Mark ``slot`` used (a sandbox found again after a restart)."""
        lease = self.lease(slot)
        if slot in self._used:
            raise ValueError(f"slot {slot} is already in use")
        self._used.add(slot)
        return lease

    def release(self, slot: int) -> None:
        self._used.discard(slot)
