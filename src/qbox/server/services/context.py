"""What every service needs: settings, database sessions, agents and a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qbox.core.errors import HostUnavailableError
from qbox.core.timefmt import utcnow
from qbox.server.agent_client import AgentClient, AgentEndpoint
from qbox.server.services import audit_notes
from qbox.server.settings import ServerSettings


AgentFactory = Callable[[str, str], AgentClient]


@dataclass
class AgentPool:
    """The agent client of each host, by host id, and each host's liveness as last judged.

    The embedded agent is added at start; joined hosts are added (and dropped) by the
    host monitor from the database, so every replica reaches every host. A call for a
    host that is not answering heartbeats is refused at once, never left to time out.
    """

    clients: dict[str, AgentClient] = field(default_factory=dict)
    # Address each joined host's client was made for (a host that moves gets a new one).
    addresses: dict[str, str] = field(default_factory=dict)
    # Liveness of each host as the host monitor last saw it (ready | unhealthy | down).
    liveness: dict[str, str] = field(default_factory=dict)
    # Hosts that came back after missing heartbeats: the next host sync removes the containers
    # they hold of sandboxes that ended meanwhile.
    to_sweep: set[str] = field(default_factory=set)
    # The cluster CA's certificate, which https agents' certificates must chain to.
    ca_pem: str | None = None
    # Makes joined hosts' clients from (address, secret) instead (tests).
    factory: AgentFactory | None = None

    def for_host(self, host_id: str | None) -> AgentClient:
        key = host_id or ""
        client = self.clients.get(key)
        if client is None:
            raise HostUnavailableError(f"host {host_id!r} is not connected to this control plane",
                                       details={"reason": "host_unknown", "hostId": host_id,
                                                "transient": True})
        liveness = self.liveness.get(key, "ready")
        if liveness != "ready":
            raise HostUnavailableError(
                f"host {host_id} is {liveness}: it has not sent a heartbeat in time",
                details={"reason": f"host_{liveness}", "hostId": host_id, "transient": True},
                retry_after=5)
        return client

    def add(self, host_id: str, client: AgentClient) -> None:
        self.clients[host_id] = client

    async def connect(self, host_id: str, address: str, secret: str) -> None:
        """Have a client for a joined host at ``address`` (a new one if it moved)."""
        if self.addresses.get(host_id) == address and host_id in self.clients:
            return
        old = self.clients.pop(host_id, None)
        self.clients[host_id] = self.factory(address, secret) if self.factory is not None \
            else AgentClient(AgentEndpoint(address, secret, ca_pem=self.ca_pem))
        self.addresses[host_id] = address
        if old is not None:
            await old.aclose()

    async def drop(self, host_id: str) -> None:
        client = self.clients.pop(host_id, None)
        self.addresses.pop(host_id, None)
        self.liveness.pop(host_id, None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()
        self.addresses.clear()


@dataclass
class ServiceContext:
    settings: ServerSettings
    sessions: async_sessionmaker[AsyncSession]
    agents: AgentPool
    clock: Callable[[], datetime] = utcnow
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every session handed out writes the current audit note with the change it commits.
        audit_notes.install(self.sessions)
