"""Picking the sandbox network: the host's, none, or the in-memory fake for the fake runtime."""

from __future__ import annotations

from qbox.agent.host_names import HostNames
from qbox.agent.network.base import SandboxNetwork
from qbox.agent.network.fake import FakeNetwork, NoNetwork
from qbox.agent.settings import AgentSettings


def create_network(settings: AgentSettings, *, fake_runtime: bool) -> SandboxNetwork:
    if fake_runtime:
        return FakeNetwork(settings.network_dir, settings.network_pool)
    if not settings.network:
        return NoNetwork()
    # Imported here: pyroute2 takes ≈200 ms to import, which the fake runtime
    # (unit tests) and a network-less agent need not pay.
    from qbox.agent.network.manager import HostNetwork, NetworkConfig

    names = HostNames.for_data_dir(settings.data_dir)
    return HostNetwork(NetworkConfig(
        state_dir=settings.network_dir, pool=settings.network_pool,
        dns=settings.network_dns, blocked=settings.network_blocked,
        ifname_prefix=names.ifname_prefix, table=names.nft_table,
        netns_prefix=names.netns_prefix,
        # A default pool moves to a free one when another agent here holds it; a set one never.
        fallback_pools=names.fallback_pools if settings.network_pool == names.default_pool else ()))
