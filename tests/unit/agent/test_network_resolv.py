from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from qbox.agent.network import resolv

HOST = """# comment
search corp.example
nameserver 127.0.0.53
nameserver 10.255.255.53   # the VPC resolver
nameserver ::1
nameserver 2001:db8::53
nameserver fe80::1%eth0
nameserver 192.0.2.53
nameserver 10.255.255.53
options edns0
"""


def test_loopback_stubs_ipv6_and_duplicates_are_skipped() -> None:
    assert resolv.parse_nameservers(HOST) == [IPv4Address("10.255.255.53"),
                                              IPv4Address("192.0.2.53")]


def test_a_stub_only_host_falls_back_to_systemd_resolveds_upstreams(tmp_path: Path) -> None:
    stub = tmp_path / "resolv.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("nameserver 198.51.100.53\n")
    assert resolv.host_resolvers(sources=[stub, upstream]) == [IPv4Address("198.51.100.53")]
    assert resolv.host_resolvers(sources=[stub, tmp_path / "missing"]) == []


def test_the_operator_override_wins_and_is_checked(tmp_path: Path) -> None:
    assert resolv.host_resolvers(["192.0.2.1"], sources=[]) == [IPv4Address("192.0.2.1")]
    for bad in (["127.0.0.1"], ["2001:db8::1"]):
        with pytest.raises(ValueError):
            resolv.host_resolvers(bad)


def test_render_lists_at_most_three_servers() -> None:
    servers = [IPv4Address(f"192.0.2.{n}") for n in range(1, 6)]
    text = resolv.render(servers)
    assert [line for line in text.splitlines() if line.startswith("nameserver")] == [
        "nameserver 192.0.2.1", "nameserver 192.0.2.2", "nameserver 192.0.2.3"]
    assert "options timeout:2 attempts:2" in text
    assert "nameserver" not in resolv.render([])
