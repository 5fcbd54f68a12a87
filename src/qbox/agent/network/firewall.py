"""The host-side firewall of sandboxes: nftables scripts for the agent's table (``inet qbox``).

One table, static chains, and per-sandbox *set elements* (adding or removing
a sandbox is one element in ``sandboxes`` and, with internet access, one in
``internet``; no rule changes)::

    input    (hook input)   from a sandbox interface: only replies to
                            connections the host opened; everything else refused
    forward  (hook forward) from a sandbox interface → from_sandbox;
                            to a sandbox interface: only replies
    from_sandbox            drop non-IPv4 and spoofed sources
                            (iifname . saddr must be in @sandboxes);
                            refuse other sandboxes; refuse unless iifname in
                            @internet; accept port 53 to @resolvers;
                            refuse @blocked destinations
    postrouting (nat)       masquerade the pool out of any non-sandbox interface

The table also holds its pool (set ``pool``), so that an agent starting
in a namespace where another agent's table (``qbox_<tag>``, host_names.py)
already claims an overlapping pool can refuse to, whether or not that agent
has sandboxes at the moment.

``blocked`` is the always-forbidden IPv4 space (private, CGNAT, loopback,
link-local/metadata, multicast, reserved), the pool itself, the networks the
host is directly attached to (its LAN neighbours, its gateway, a control
plane next to it) and anything the operator adds. The host's own addresses
never reach the forward path: they are refused by ``input``. Refusals are
``reject`` (ICMP admin-prohibited) so a blocked connect fails at once rather
than hanging; spoofed or non-IPv4 packets are dropped silently.

Programming the table is idempotent and atomic (one transaction): chains are
flushed and refilled, the static sets refilled, and the per-sandbox sets
left alone so an agent restart keeps running sandboxes online. Pure text
generation: unit-tested without root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

TABLE = "qbox"

# Never reachable from a sandbox, whatever DNS says.
ALWAYS_BLOCKED: tuple[str, ...] = (
    "0.0.0.0/8",        # "this network"
    "10.0.0.0/8",       # RFC 1918
    "100.64.0.0/10",    # CGNAT (RFC 6598)
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local, cloud metadata (169.254.169.254)
    "172.16.0.0/12",    # RFC 1918
    "192.0.0.0/24",     # IETF protocol assignments
    "192.168.0.0/16",   # RFC 1918
    "198.18.0.0/15",    # benchmarking
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, limited broadcast
)

REJECT = "reject with icmpx type admin-prohibited"


@dataclass(frozen=True)
class FirewallConfig:
    pool: IPv4Network
    ifname_prefix: str
    resolvers: Sequence[IPv4Address] = ()
    # The host's directly attached networks and operator additions.
    extra_blocked: Sequence[IPv4Network] = ()
    table: str = TABLE
    always_blocked: Sequence[str] = field(default=ALWAYS_BLOCKED)

    @property
    def family_table(self) -> str:
        return f"inet {self.table}"

    @property
    def wildcard(self) -> str:
        return f'"{self.ifname_prefix}*"'


def blocked_networks(config: FirewallConfig) -> list[IPv4Network]:
    """Everything refused as a destination, merged (interval sets reject overlaps)."""
    networks = [IPv4Network(text) for text in config.always_blocked]
    networks += [config.pool, *config.extra_blocked]
    return list(ipaddress.collapse_addresses(networks))


def _chain(table: str, name: str, hook: str | None, rules: Iterable[str]) -> list[str]:
    spec = f" {{ {hook} }}" if hook else ""
    lines = [f"add chain {table} {name}{spec}", f"flush chain {table} {name}"]
    lines += [f"add rule {table} {name} {rule}" for rule in rules]
    return lines


def base_script(config: FirewallConfig) -> str:
    """Create or refresh the table; keeps per-sandbox elements."""
    t, sb = config.family_table, config.wildcard
    lines = [
        f"add table {t}",
        f"add set {t} sandboxes {{ type ifname . ipv4_addr; }}",
        f"add set {t} internet {{ type ifname; }}",
        f"add set {t} resolvers {{ type ipv4_addr; }}",
        f"add set {t} blocked {{ type ipv4_addr; flags interval; }}",
        f"add set {t} pool {{ type ipv4_addr; flags interval; }}",
        f"flush set {t} resolvers",
        f"flush set {t} blocked",
        f"flush set {t} pool",
        f"add element {t} pool {{ {config.pool} }}",
        f"add element {t} blocked {{ {', '.join(map(str, blocked_networks(config)))} }}",
    ]
    if config.resolvers:
        lines.append(f"add element {t} resolvers {{ {', '.join(map(str, config.resolvers))} }}")
    # from_sandbox first: forward jumps to it, so it must exist when forward is filled.
    lines += _chain(t, "from_sandbox", None, [
        "meta nfproto != ipv4 drop",
        "iifname . ip saddr != @sandboxes drop",
        f"oifname {sb} {REJECT}",
        f"iifname != @internet {REJECT}",
        "ip daddr @resolvers meta l4proto { tcp, udp } th dport 53 accept",
        f"ip daddr @blocked {REJECT}",
    ])
    lines += _chain(t, "input", "type filter hook input priority filter - 10; policy accept;", [
        f"iifname {sb} ct state established,related accept",
        f"iifname {sb} meta nfproto != ipv4 drop",
        f"iifname {sb} {REJECT}",
    ])
    lines += _chain(t, "forward", "type filter hook forward priority filter - 10; policy accept;", [
        f"iifname {sb} jump from_sandbox",
        f"oifname {sb} ct state established,related accept",
        f"oifname {sb} {REJECT}",
    ])
    lines += _chain(t, "postrouting", "type nat hook postrouting priority srcnat; policy accept;", [
        f"ip saddr {config.pool} oifname != {sb} masquerade",
    ])
    return "\n".join(lines) + "\n"


def _elements(config: FirewallConfig, ifname: str, address: IPv4Address,
              internet: bool) -> list[tuple[str, str]]:
    elements = [("sandboxes", f'"{ifname}" . {address}')]
    if internet:
        elements.append(("internet", f'"{ifname}"'))
    return elements


def add_sandbox_script(config: FirewallConfig, ifname: str, address: IPv4Address,
                       internet: bool) -> str:
    t = config.family_table
    return "".join(f"add element {t} {name} {{ {value} }}\n"
                   for name, value in _elements(config, ifname, address, internet))


def remove_sandbox_script(config: FirewallConfig, ifname: str, address: IPv4Address) -> str:
    # nft 1.0.6 has no "destroy": adding first makes the delete succeed even
    # when the element is already gone (a partial setup, a second delete).
    t = config.family_table
    lines = []
    for name, value in _elements(config, ifname, address, internet=True):
        lines += [f"add element {t} {name} {{ {value} }}",
                  f"delete element {t} {name} {{ {value} }}"]
    return "\n".join(lines) + "\n"


def list_set_commands(config: FirewallConfig) -> list[str]:
    # One command each: nft 1.0.6 fails a second "list set" in the same buffer.
    t = config.family_table
    return [f"list set {t} sandboxes\n", f"list set {t} internet\n"]


def stale_elements_script(config: FirewallConfig, listing: dict[str, Any],
                          live_ifnames: set[str]) -> str:
    """Deletes for elements whose interface no longer exists (left by a crashed agent).

    ``listing`` is the merged JSON output of ``list_set_commands``. An element whose
    interface still exists may belong to a sandbox of another agent sharing
    this table: it is kept.
    """
    t = config.family_table
    lines: list[str] = []
    for item in listing.get("nftables", []):
        nft_set = item.get("set") if isinstance(item, dict) else None
        if not nft_set or nft_set.get("table") != config.table:
            continue
        name = nft_set.get("name")
        for element in nft_set.get("elem", []):
            if name == "sandboxes" and isinstance(element, dict) and "concat" in element:
                ifname, address = element["concat"]
                if ifname not in live_ifnames:
                    lines.append(f'delete element {t} sandboxes {{ "{ifname}" . {address} }}')
            elif name == "internet" and isinstance(element, str) and element not in live_ifnames:
                lines.append(f'delete element {t} internet {{ "{element}" }}')
    return "\n".join(lines) + ("\n" if lines else "")


def other_tables(listing: dict[str, Any], own: str) -> list[str]:
    """The ``inet`` tables of other qbox agents in this namespace, from ``list tables``."""
    names = [item["table"].get("name", "") for item in listing.get("nftables", [])
             if isinstance(item, dict) and isinstance(item.get("table"), dict)
             and item["table"].get("family") == "inet"]
    return sorted(name for name in names if name != own and
                  (name == TABLE or name.startswith(f"{TABLE}_")))


def pool_command(table: str) -> str:
    return f"list set inet {table} pool\n"


def listed_pools(listing: dict[str, Any]) -> list[IPv4Network]:
    """The networks in the ``pool`` set of a ``pool_command`` listing."""
    pools: list[IPv4Network] = []
    for item in listing.get("nftables", []):
        nft_set = item.get("set") if isinstance(item, dict) else None
        for element in (nft_set or {}).get("elem", []):
            if isinstance(element, dict) and "prefix" in element:
                prefix = element["prefix"]
                pools.append(IPv4Network(f"{prefix['addr']}/{prefix['len']}"))
            elif isinstance(element, str):
                pools.append(IPv4Network(element))
    return pools
