"""Sandbox networking on the host: a namespace, a veth link and firewall elements per sandbox.

Attach (≈8 ms, see docs/benchmarks.md): record the lease, create the
namespace with ``eth0`` inside and ``qb-<slot>`` outside, address the host
end, add the sandbox's set elements, write its resolv.conf. Detach: delete
the elements, unpin the namespace (the kernel then destroys it and both veth
ends), forget the record.

Every kernel operation runs on one dedicated thread, in order: netlink and
libnftables handles are not shared between threads, and spawns never race
for a slot. The event loop only waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from qbox.agent.network import firewall, links, netns, resolv
from qbox.agent.network.addresses import IFNAME_PREFIX, AddressPool
from qbox.agent.network.base import Attachment
from qbox.agent.network.nftables import Nft, NftError, open_nft
from qbox.agent.network.records import NetworkRecord, RecordStore
from qbox.core.errors import HostNoCapacityError, InternalError

log = logging.getLogger("qbox.agent.network")

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# A slot whose interface still exists (the kernel is destroying an old
# one, or another agent holds it) is skipped; this many in a row is an error.
MAX_SLOT_TRIES = 64

T = TypeVar("T")


@dataclass(frozen=True)
class NetworkConfig:
    state_dir: Path
    pool: str = "10.213.0.0/16"
    # Upstream resolvers for sandboxes; empty → the host's (see resolv.py).
    dns: tuple[str, ...] = ()
    # Destinations refused on top of the built-in ranges (e.g. a control plane's address).
    blocked: tuple[str, ...] = ()
    netns_dir: Path = netns.NETNS_DIR
    # The agent's own names (host_names.py): veth host ends, nft table, namespace pins.
    ifname_prefix: str = IFNAME_PREFIX
    table: str = firewall.TABLE
    netns_prefix: str = "qbox-"
    enable_forwarding: bool = True
    # Pools to take instead when ``pool`` is a default (no QBOX_NETWORK_POOL) that another
    # agent in this namespace, or a host network, already holds; empty: ``pool`` or nothing.
    fallback_pools: tuple[str, ...] = ()


def enable_ip_forwarding(path: Path = IP_FORWARD) -> bool:
    """Turn on IPv4 forwarding; return whether it was off."""
    if path.read_text().strip() == "1":
        return False
    path.write_text("1")
    log.info("enabled net.ipv4.ip_forward for sandbox traffic")
    return True


class HostNetwork:
    def __init__(self, config: NetworkConfig,
                 nft_factory: Callable[[], Nft] = open_nft) -> None:
        self._config = config
        self._pool = AddressPool(config.pool, config.ifname_prefix)
        self._records = RecordStore(config.state_dir)
        self._nft_factory = nft_factory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qbox-network")
        self._held: dict[str, NetworkRecord] = {}
        self._attachments: dict[str, Attachment] = {}
        self._resolvers: list[IPv4Address] = []
        self._firewall = firewall.FirewallConfig(self._pool.network, config.ifname_prefix,
                                                 table=config.table)
        # Created on the network thread, used only there.
        self._nft: Nft | None = None
        self._ipr: Any = None
        self._host_fd = -1
        # Set once start has sorted out the earlier agent's sandboxes: before that an
        # empty _held says nothing about what still runs.
        self._started = False

    async def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(func, *args, **kwargs))

    # --- the public, async side -------------------------------------------------

    async def start(self, keep: Collection[str]) -> dict[str, Attachment]:
        return await self._call(self._start, set(keep))

    async def attach(self, sandbox_id: str, *, internet: bool) -> Attachment:
        return await self._call(self._attach, sandbox_id, internet)

    def get(self, sandbox_id: str) -> Attachment | None:
        return self._attachments.get(sandbox_id)

    async def detach(self, sandbox_id: str) -> None:
        await self._call(self._detach, sandbox_id)

    async def close(self) -> None:
        await self._call(self._close)
        self._executor.shutdown(wait=True)

    # --- on the network thread ---------------------------------------------------

    def _netns_path(self, sandbox_id: str) -> Path:
        return self._config.netns_dir / f"{self._config.netns_prefix}{sandbox_id}"

    def _start(self, keep: set[str]) -> dict[str, Attachment]:
        if self._config.enable_forwarding:
            enable_ip_forwarding()
        netns.prepare_dir(self._config.netns_dir)
        self._nft = self._nft_factory()
        self._ipr = links.open_netlink()
        self._host_fd = links.host_netns_fd()
        attached = links.host_networks(self._ipr, self._config.ifname_prefix)
        self._choose_pool(attached)
        overlap = [str(n) for n in attached if n.overlaps(self._pool.network)]
        if overlap:
            raise InternalError(f"the sandbox address pool {self._pool.network} overlaps "
                                f"this host's networks {overlap}: choose another QBOX_NETWORK_POOL")
        self._refuse_claimed_pool()
        self._resolvers = resolv.host_resolvers(self._config.dns)
        extra = [*attached, *(IPv4Network(text) for text in self._config.blocked)]
        self._firewall = firewall.FirewallConfig(
            self._pool.network, self._config.ifname_prefix, self._resolvers, extra,
            table=self._config.table)
        self._program_firewall()
        for sandbox_id, record in self._records:
            if record is not None and sandbox_id in keep and self._readopt(record):
                continue
            log.info("removing the network left by sandbox %s", sandbox_id)
            self._teardown(sandbox_id, record)
        self._remove_stale_elements()
        self._started = True
        log.info("sandbox network ready: pool %s, table %s via %s, resolvers %s",
                 self._pool.network, self._firewall.family_table, self._nft.name,
                 ", ".join(map(str, self._resolvers)) or "none")
        return dict(self._attachments)

    def _choose_pool(self, attached: list[IPv4Network]) -> None:
        """With a default pool: the one this agent's table already holds (a restart keeps its
        sandboxes' addresses), else the first of the default and its fallbacks that no other
        agent's table in this namespace and no host network holds."""
        if not self._config.fallback_pools:
            return
        assert self._nft is not None
        try:
            own = firewall.listed_pools(self._nft.query(firewall.pool_command(self._config.table)))
        except NftError:
            own = []  # no table yet (a first start), or an older one without a pool set
        taken = [*attached, *(pool for _table, pools in self._claimed_pools() for pool in pools)]
        choices = [IPv4Network(text) for text in (self._config.pool, *self._config.fallback_pools)]
        free = [pool for pool in choices if not any(pool.overlaps(other) for other in taken)]
        chosen = own[0] if own else (free[0] if free else None)
        if chosen is not None and chosen != self._pool.network:
            log.info("sandbox address pool %s is taken here; using %s", self._pool.network, chosen)
            self._pool = AddressPool(str(chosen), self._config.ifname_prefix)

    def _claimed_pools(self) -> list[tuple[str, list[IPv4Network]]]:
        """The pools other agents' tables in this namespace hold, by table."""
        assert self._nft is not None
        tables = self._nft.query("list tables inet\n")
        claimed: list[tuple[str, list[IPv4Network]]] = []
        for table in firewall.other_tables(tables, self._config.table):
            try:
                claimed.append((table, firewall.listed_pools(self._nft.query(firewall.pool_command(table)))))
            except NftError:
                continue  # an older qbox's table, which does not say
        return claimed

    def _refuse_claimed_pool(self) -> None:
        """Refuse a pool another agent's table in this namespace holds: both agents would
        route the same addresses to their own sandboxes."""
        for table, claimed in self._claimed_pools():
            if any(pool.overlaps(self._pool.network) for pool in claimed):
                raise InternalError(
                    f"the sandbox address pool {self._pool.network} overlaps the pool of "
                    f"another agent on this host (nftables table inet {table}, "
                    f"{', '.join(map(str, claimed))}): set QBOX_NETWORK_POOL to another range")

    def _program_firewall(self) -> None:
        assert self._nft is not None
        script = firewall.base_script(self._firewall)
        try:
            self._nft.run(script)
            return
        except NftError as exc:
            # A table of another shape (an older qbox): start it afresh. Kept
            # sandboxes get their elements back right after.
            log.warning("recreating nftables table %s: %s", self._firewall.family_table, exc)
        try:
            self._nft.run(f"delete table {self._firewall.family_table}\n")
            self._nft.run(script)
        except NftError as exc:
            raise InternalError(f"cannot program the sandbox firewall: {exc} (QBOX_NETWORK=off "
                                "runs sandboxes without network instead)") from exc

    def _readopt(self, record: NetworkRecord) -> bool:
        assert self._nft is not None
        try:
            self._pool.reserve(record.slot)
        except ValueError:
            return False
        self._nft.run(firewall.add_sandbox_script(self._firewall, record.ifname,
                                                  record.address, record.internet))
        self._held[record.sandbox_id] = record
        self._attachments[record.sandbox_id] = self._attachment(record)
        return True

    def _remove_stale_elements(self) -> None:
        assert self._nft is not None
        listing: dict[str, Any] = {"nftables": []}
        for command in firewall.list_set_commands(self._firewall):
            listing["nftables"] += self._nft.query(command)["nftables"]
        script = firewall.stale_elements_script(self._firewall, listing,
                                                links.link_names(self._ipr))
        if script:
            self._nft.run(script)

    def _attachment(self, record: NetworkRecord) -> Attachment:
        return Attachment(record.sandbox_id, str(record.address), Path(record.netns),
                          self._records.resolv_conf(record.sandbox_id), record.internet)

    def _attach(self, sandbox_id: str, internet: bool) -> Attachment:
        existing = self._attachments.get(sandbox_id)
        if existing is not None:
            return existing
        # Anything left under this id is from a failed earlier try: the
        # sandbox manager never attaches a sandbox that is alive.
        self._teardown(sandbox_id, self._records.load(sandbox_id))
        for _ in range(min(MAX_SLOT_TRIES, self._pool.capacity)):
            lease = self._pool.allocate()
            record = NetworkRecord(sandbox_id, lease.slot, str(lease.link), lease.ifname,
                                   str(self._netns_path(sandbox_id)), internet)
            try:
                self._records.save(record)
                self._build(record)
            except links.InterfaceExistsError:
                # That name, and so its elements, belong to someone else.
                self._teardown(sandbox_id, record, owns_elements=False)
                continue
            except BaseException:
                self._teardown(sandbox_id, record)
                raise
            self._held[sandbox_id] = record
            attachment = self._attachment(record)
            self._attachments[sandbox_id] = attachment
            return attachment
        raise HostNoCapacityError("no free sandbox network interface on this host",
                                  details={"transient": True})

    def _build(self, record: NetworkRecord) -> None:
        assert self._nft is not None
        lease = record.lease
        netns.create(Path(record.netns), partial(links.configure_inside, lease, self._host_fd))
        links.configure_host(self._ipr, lease)
        self._nft.run(firewall.add_sandbox_script(self._firewall, lease.ifname, lease.address,
                                                  record.internet))
        self._records.write_resolv_conf(record.sandbox_id, resolv.render(self._resolvers))

    def _detach(self, sandbox_id: str) -> None:
        self._attachments.pop(sandbox_id, None)
        record = self._held.pop(sandbox_id, None) or self._records.load(sandbox_id)
        self._teardown(sandbox_id, record)

    def _teardown(self, sandbox_id: str, record: NetworkRecord | None, *,
                  owns_elements: bool = True) -> None:
        """Remove every part that may exist; each step tolerates a missing part."""
        path = Path(record.netns) if record else self._netns_path(sandbox_id)
        if record is not None:
            # A stale record may name a slot that a live sandbox holds now.
            shared = any(other.slot == record.slot for other_id, other in self._held.items()
                         if other_id != sandbox_id)
            if not shared:
                self._pool.release(record.slot)
            # The interface is ours only while our namespace holds its other
            # end; otherwise it is gone (and the next start sweeps its
            # elements) or another sandbox's now.
            if owns_elements and not shared and self._nft is not None and netns.exists(path):
                try:
                    self._nft.run(firewall.remove_sandbox_script(self._firewall, record.ifname,
                                                                 record.address))
                except NftError:
                    log.warning("cannot remove the firewall elements of %s", sandbox_id,
                                exc_info=True)
        netns.remove(path)
        self._records.remove(sandbox_id)

    def _close(self) -> None:
        if self._nft is not None and self._started and not self._held:
            # Nothing of ours is left to keep online: no table outlives its agent
            # (a test's, or one whose data dir is gone), and its pool is free again.
            try:
                self._nft.run(f"delete table {self._firewall.family_table}\n")
            except NftError:
                log.warning("cannot remove nftables table %s", self._firewall.family_table,
                            exc_info=True)
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._nft is not None:
            close = getattr(self._nft, "close", None)
            if close is not None:
                close()
            self._nft = None
        if self._host_fd >= 0:
            os.close(self._host_fd)
            self._host_fd = -1
