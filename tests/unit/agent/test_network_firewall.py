from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from qbox.agent.network import firewall

CONFIG = firewall.FirewallConfig(
    pool=IPv4Network("10.213.0.0/16"), ifname_prefix="qb-",
    resolvers=[IPv4Address("10.255.255.53")],
    extra_blocked=[IPv4Network("192.0.2.0/24"), IPv4Network("198.51.100.7/32")])


def _rules(script: str, chain: str) -> list[str]:
    prefix = f"add rule inet qbox {chain} "
    return [line[len(prefix):] for line in script.splitlines() if line.startswith(prefix)]


def test_blocked_ranges_cover_private_cgnat_loopback_link_local_and_multicast() -> None:
    blocked = firewall.blocked_networks(CONFIG)
    for address in ("10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
                    "127.0.0.1", "169.254.169.254", "224.0.0.1", "255.255.255.255", "0.0.0.0",
                    "10.213.0.6",          # another sandbox
                    "192.0.2.1",           # the host's own LAN (extra)
                    "198.51.100.7"):       # an operator addition
        assert any(IPv4Address(address) in network for network in blocked), address
    for address in ("203.0.113.10", "198.51.100.8", "8.8.8.8", "1.1.1.1"):
        assert not any(IPv4Address(address) in network for network in blocked), address
    # Merged: an interval set refuses overlapping elements.
    assert len(blocked) == len(set(blocked))
    assert all(not a.overlaps(b) for i, a in enumerate(blocked) for b in blocked[i + 1:])


def test_base_script_is_idempotent_and_keeps_per_sandbox_elements() -> None:
    script = firewall.base_script(CONFIG)
    assert script.startswith("add table inet qbox\n")
    assert "flush set inet qbox blocked" in script and "flush set inet qbox resolvers" in script
    assert "flush set inet qbox sandboxes" not in script
    assert "flush set inet qbox internet" not in script
    assert "delete table" not in script
    for chain in ("input", "forward", "from_sandbox", "postrouting"):
        assert f"flush chain inet qbox {chain}" in script
    assert "add element inet qbox resolvers { 10.255.255.53 }" in script


def test_sandbox_traffic_rules_in_order() -> None:
    script = firewall.base_script(CONFIG)
    reject = firewall.REJECT
    assert _rules(script, "from_sandbox") == [
        "meta nfproto != ipv4 drop",
        "iifname . ip saddr != @sandboxes drop",
        f'oifname "qb-*" {reject}',
        f"iifname != @internet {reject}",
        "ip daddr @resolvers meta l4proto { tcp, udp } th dport 53 accept",
        f"ip daddr @blocked {reject}",
    ]
    assert _rules(script, "input") == [
        'iifname "qb-*" ct state established,related accept',
        'iifname "qb-*" meta nfproto != ipv4 drop',
        f'iifname "qb-*" {reject}',
    ]
    assert _rules(script, "forward") == [
        'iifname "qb-*" jump from_sandbox',
        'oifname "qb-*" ct state established,related accept',
        f'oifname "qb-*" {reject}',
    ]
    assert _rules(script, "postrouting") == ['ip saddr 10.213.0.0/16 oifname != "qb-*" masquerade']


def test_per_sandbox_changes_are_set_elements() -> None:
    address = IPv4Address("10.213.0.6")
    assert firewall.add_sandbox_script(CONFIG, "qb-1", address, internet=True) == (
        'add element inet qbox sandboxes { "qb-1" . 10.213.0.6 }\n'
        'add element inet qbox internet { "qb-1" }\n')
    assert firewall.add_sandbox_script(CONFIG, "qb-1", address, internet=False) == (
        'add element inet qbox sandboxes { "qb-1" . 10.213.0.6 }\n')
    removal = firewall.remove_sandbox_script(CONFIG, "qb-1", address).splitlines()
    # Add-then-delete: succeeds whether or not the element is still there.
    assert removal == [
        'add element inet qbox sandboxes { "qb-1" . 10.213.0.6 }',
        'delete element inet qbox sandboxes { "qb-1" . 10.213.0.6 }',
        'add element inet qbox internet { "qb-1" }',
        'delete element inet qbox internet { "qb-1" }',
    ]


def test_stale_elements_are_those_whose_interface_is_gone() -> None:
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"set": {"family": "inet", "table": "qbox", "name": "sandboxes", "elem": [
            {"concat": ["qb-1", "10.213.0.6"]}, {"concat": ["qb-2", "10.213.0.10"]}]}},
        {"set": {"family": "inet", "table": "qbox", "name": "internet", "elem": ["qb-1", "qb-2"]}},
        {"set": {"family": "inet", "table": "other", "name": "internet", "elem": ["qb-9"]}},
    ]}
    script = firewall.stale_elements_script(CONFIG, listing, live_ifnames={"qb-2", "eth0"})
    assert script.splitlines() == [
        'delete element inet qbox sandboxes { "qb-1" . 10.213.0.6 }',
        'delete element inet qbox internet { "qb-1" }',
    ]
    assert firewall.stale_elements_script(CONFIG, {"nftables": []}, set()) == ""


def test_the_table_says_its_pool_and_other_agents_tables_are_found_by_name() -> None:
    script = firewall.base_script(CONFIG)
    assert "add set inet qbox pool { type ipv4_addr; flags interval; }" in script
    assert "flush set inet qbox pool\nadd element inet qbox pool { 10.213.0.0/16 }" in script
    # As nft 1.0.6 prints "list tables" and "list set inet qbox_x pool" in JSON.
    tables = {"nftables": [{"metainfo": {"version": "1.0.6"}},
                           {"table": {"family": "inet", "name": "qbox", "handle": 1}},
                           {"table": {"family": "inet", "name": "qbox_4f2a9c", "handle": 2}},
                           {"table": {"family": "ip", "name": "qbox_ip", "handle": 3}},
                           {"table": {"family": "inet", "name": "qboxer", "handle": 4}},
                           {"table": {"family": "inet", "name": "filter", "handle": 5}}]}
    assert firewall.other_tables(tables, "qbox") == ["qbox_4f2a9c"]
    assert firewall.other_tables(tables, "qbox_4f2a9c") == ["qbox"]
    assert firewall.pool_command("qbox_4f2a9c") == "list set inet qbox_4f2a9c pool\n"
    listing = {"nftables": [{"metainfo": {}}, {"set": {
        "family": "inet", "name": "pool", "table": "qbox_4f2a9c", "type": "ipv4_addr",
        "flags": ["interval"], "elem": [{"prefix": {"addr": "10.208.16.0", "len": 20}}]}}]}
    assert firewall.listed_pools(listing) == [IPv4Network("10.208.16.0/20")]
