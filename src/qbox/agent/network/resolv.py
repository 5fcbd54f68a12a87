"""DNS for sandboxes: the host's upstream resolvers, written into a per-sandbox resolv.conf.

Sandboxes use the same upstream resolvers as the host, reached through the
forward path like any other destination (the firewall lets port 53 through
to exactly these addresses even when they sit in a private range). They do
not talk to a DNS service on the host itself: the host is unreachable from
inside. So loopback stub resolvers (systemd-resolved's 127.0.0.53,
dnsmasq on 127.0.0.1) are skipped; when the host has only such a stub, the
upstreams systemd-resolved lists in ``/run/systemd/resolve/resolv.conf`` are
used, and otherwise the operator names them (``QBOX_NETWORK_DNS``).
Sandboxes are IPv4-only, so IPv6 resolvers are skipped too.

Pure except ``host_resolvers``, which reads the files.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address
from pathlib import Path

log = logging.getLogger("qbox.agent.network")

HOST_RESOLV_CONFS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
MAX_NAMESERVERS = 3  # glibc uses no more than three


def parse_nameservers(text: str) -> list[IPv4Address]:
    """The IPv4 ``nameserver`` entries of a resolv.conf a sandbox can use (no loopback stubs)."""
    found: list[IPv4Address] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(fields[1])
        except ValueError:
            continue  # e.g. an IPv6 address with a %zone
        if not isinstance(address, IPv4Address):
            continue
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            continue
        if address not in found:
            found.append(address)
    return found


def host_resolvers(override: Sequence[str] = (),
                   sources: Iterable[Path] = HOST_RESOLV_CONFS) -> list[IPv4Address]:
    """The resolvers sandboxes get: ``override`` if given, else the first of ``sources``
    that names a usable one."""
    if override:
        addresses = [ipaddress.ip_address(text) for text in override]
        bad = [str(a) for a in addresses if not isinstance(a, IPv4Address) or a.is_loopback]
        if bad:
            raise ValueError(f"DNS servers for sandboxes must be non-loopback IPv4: {bad}")
        return [a for a in addresses if isinstance(a, IPv4Address)][:MAX_NAMESERVERS]
    for source in sources:
        try:
            found = parse_nameservers(source.read_text())
        except OSError:
            continue
        if found:
            return found[:MAX_NAMESERVERS]
    log.warning("no upstream DNS resolver for sandboxes (the host lists none, or only "
                "loopback stubs): set QBOX_NETWORK_DNS")
    return []


def render(nameservers: Sequence[IPv4Address]) -> str:
    """A sandbox's /etc/resolv.conf."""
    lines = ["# qbox: the host's upstream resolvers (read-only)"]
    lines += [f"nameserver {address}" for address in nameservers[:MAX_NAMESERVERS]]
    # Fail over quickly: a sandbox without internet access is refused at
    # once, one with it should not wait 5 s per server.
    lines.append("options timeout:2 attempts:2")
    return "\n".join(lines) + "\n"
