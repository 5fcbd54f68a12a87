"""The sandbox's veth pair, addresses and routes, over netlink (pyroute2).

Netlink instead of ``ip``: namespace and link setup take ≈6 ms here against
40–70 ms for the same steps as ``ip`` commands.

The pair is created from *inside* the new namespace: ``eth0`` stays there
and the peer is created directly in the host namespace under its final
name, so the kernel's name check is the allocation lock (two agents, or a
slot whose old interface the kernel has not destroyed yet, get ``EEXIST``).
IPv6 is off on both ends before they come up: sandboxes are IPv4-only, and
no link-local address or router solicitation ever appears.
"""

from __future__ import annotations

import errno
import os
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from qbox.agent.network.addresses import LINK_PREFIX, Lease

SANDBOX_IFNAME = "eth0"
_IPV6_CONF = Path("/proc/sys/net/ipv6/conf")


class InterfaceExistsError(Exception):
    """The host already has an interface with the lease's name."""


def _disable_ipv6(ifname: str) -> None:
    # A sysctl under /proc/sys/net acts on the namespace of the thread that
    # opens it. A kernel without IPv6 has no such file: nothing to disable.
    try:
        (_IPV6_CONF / ifname / "disable_ipv6").write_text("1")
    except FileNotFoundError:
        pass


def open_netlink() -> Any:
    """An rtnetlink socket in the calling thread's namespace, without event subscriptions."""
    return IPRoute(groups=0)


def configure_inside(lease: Lease, host_netns_fd: int) -> None:
    """Run inside the new namespace: loopback up, the veth pair, eth0 addressed and routed."""
    _disable_ipv6("default")  # eth0 inherits it; lo keeps ::1
    with open_netlink() as ipr:
        ipr.link("set", index=1, state="up")  # lo
        try:
            ipr.link("add", ifname=SANDBOX_IFNAME, kind="veth",
                     peer={"ifname": lease.ifname, "net_ns_fd": host_netns_fd})
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise InterfaceExistsError(lease.ifname) from None
            raise
        (index,) = ipr.link_lookup(ifname=SANDBOX_IFNAME)
        ipr.addr("add", index=index, address=str(lease.address), prefixlen=LINK_PREFIX)
        ipr.link("set", index=index, state="up")
        # onlink: the host end may not be up yet, the gateway is on-link anyway.
        ipr.route("add", dst="0.0.0.0/0", gateway=str(lease.gateway), oif=index,
                  flags=["onlink"])


def configure_host(ipr: Any, lease: Lease) -> None:
    """The host end: the gateway address, up."""
    (index,) = ipr.link_lookup(ifname=lease.ifname)
    _disable_ipv6(lease.ifname)
    ipr.addr("add", index=index, address=str(lease.gateway), prefixlen=LINK_PREFIX)
    ipr.link("set", index=index, state="up")


def link_names(ipr: Any) -> set[str]:
    return {str(link.get("ifname")) for link in ipr.link("dump")}


def host_networks(ipr: Any, skip_prefix: str) -> list[IPv4Network]:
    """The IPv4 networks the host is attached to (not loopback, not sandbox links)."""
    names = {link["index"]: str(link.get("ifname")) for link in ipr.link("dump")}
    networks: list[IPv4Network] = []
    for addr in ipr.addr("dump", family=2):
        ifname = names.get(addr["index"], "")
        if ifname == "lo" or ifname.startswith(skip_prefix):
            continue
        network = IPv4Network(f"{addr.get('address')}/{addr['prefixlen']}", strict=False)
        if not network.is_loopback and network not in networks:
            networks.append(network)
    return networks


def host_netns_fd() -> int:
    """An fd of the host namespace (the process's, whatever thread asks)."""
    return os.open(f"/proc/{os.getpid()}/ns/net", os.O_RDONLY)
