"""The names an agent gives to what it creates outside its data dir, derived from that dir.

Several agents may share one machine with nothing but ``--data-dir`` and
``--listen`` differing. Whatever lives in a host-wide namespace — the cgroup
tree, nftables tables and interface names of a network namespace, the
``/run/netns`` pins, addresses on the host's routes — is named with a short
tag of the agent's data dir, so no two agents ever touch each other's.

The default data dir (``/var/lib/qbox``) has the empty tag and keeps the
names qbox always used: an upgraded agent finds its running sandboxes' cgroups,
firewall elements, interfaces and namespaces where the older one left them,
and adopts them. Any other dir gets the first six hex digits of the SHA-256
of its resolved path: stable across restarts, the same for every way of
spelling the path, and distinct between dirs (even 100 agents on one machine
clash with odds of 1 in 3,000). Moving a data dir changes its tag: stop its
sandboxes first (docs/operations.md, "Several agents on one machine").

State the runtime keeps per container (crun's and runsc's roots, exec scratch
space, probe bundles) is already under the data dir and needs no tag; a
probe container's cgroup sits under the tagged parent like a sandbox's.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

# The one data dir whose names carry no tag (AgentSettings' default).
DEFAULT_DATA_DIR = Path("/var/lib/qbox")
TAG_LENGTH = 6
DEFAULT_POOL = IPv4Network("10.213.0.0/16")
# Where tagged agents' default pools come from: the /20s of this range, minus the
# default pool, so an agent on /var/lib/qbox and tagged ones can share a namespace.
TAGGED_POOL_RANGE = IPv4Network("10.208.0.0/12")
TAGGED_POOL_PREFIX = 20


def data_dir_tag(data_dir: Path) -> str:
    """"" for the default data dir, else six hex digits of the hash of its resolved path."""
    resolved = os.path.realpath(data_dir)
    if resolved == os.path.realpath(DEFAULT_DATA_DIR):
        return ""
    return hashlib.sha256(resolved.encode()).hexdigest()[:TAG_LENGTH]


def tagged_pools() -> list[IPv4Network]:
    """The default pools a tagged agent may get: 240 /20s (1,024 sandboxes each)."""
    return [net for net in TAGGED_POOL_RANGE.subnets(new_prefix=TAGGED_POOL_PREFIX)
            if not net.overlaps(DEFAULT_POOL)]


def default_pool(tag: str) -> IPv4Network:
    """The sandbox address pool of an agent whose QBOX_NETWORK_POOL is not set.

    Two tagged agents pick the same /20 with odds of 1 in 240; the one that
    starts second then takes the next free one (``fallback_pools``: the network
    manager compares the pools of every qbox table in its namespace). A pool
    set with QBOX_NETWORK_POOL is never moved: a clash refuses the start.
    """
    if not tag:
        return DEFAULT_POOL
    candidates = tagged_pools()
    return candidates[int(tag, 16) % len(candidates)]


def fallback_pools(tag: str) -> tuple[IPv4Network, ...]:
    """Where a tagged agent's default pool goes when another agent in its namespace holds it:
    the next /20s of the range, in order (the default data dir's /16 has none)."""
    if not tag:
        return ()
    candidates = tagged_pools()
    start = int(tag, 16) % len(candidates)
    return tuple(candidates[start + 1:] + candidates[:start])


@dataclass(frozen=True)
class HostNames:
    tag: str

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> HostNames:
        return cls(data_dir_tag(data_dir))

    @property
    def default_pool(self) -> str:
        """The address pool when QBOX_NETWORK_POOL is not set (AgentSettings fills it in)."""
        return str(default_pool(self.tag))

    @property
    def fallback_pools(self) -> tuple[str, ...]:
        return tuple(str(pool) for pool in fallback_pools(self.tag))

    def _suffixed(self, base: str, separator: str) -> str:
        return f"{base}{separator}{self.tag}" if self.tag else base

    @property
    def cgroup_parent(self) -> str:
        """Every sandbox's cgroup is ``<parent>/<sandbox id>`` in each hierarchy."""
        return "/" + self._suffixed("qbox", "-")

    @property
    def nft_table(self) -> str:
        """The ``inet`` table of the sandbox firewall."""
        return self._suffixed("qbox", "_")

    @property
    def ifname_prefix(self) -> str:
        """Host ends of sandbox veths: ``qb-<slot>``, or ``qb<tag>-<slot>`` (13 characters
        at most for a /20; a pool set by hand up to a /12 still fits the kernel's 15).
        No prefix starts another, so one agent's ``qb…-*`` wildcard never matches
        another's interfaces."""
        return f"qb{self.tag}-"

    @property
    def netns_prefix(self) -> str:
        """Sandbox network namespaces, pinned at ``/run/netns/<prefix><sandbox id>``."""
        return f"qbox-{self.tag}-" if self.tag else "qbox-"
