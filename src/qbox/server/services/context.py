"""What every service needs: settings, database sessions, agents and a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qbox.core.errors import HostUnavailableError
from qbox.core.timefmt import utcnow
from qbox.server.agent_client import AgentClient
from qbox.server.services import audit_notes
from qbox.server.settings import ServerSettings


@dataclass
class AgentPool:
    """The agent client of each host, by host id."""

    clients: dict[str, AgentClient] = field(default_factory=dict)

    def for_host(self, host_id: str | None) -> AgentClient:
        client = self.clients.get(host_id or "")
        if client is None:
            raise HostUnavailableError(f"host {host_id!r} is not connected to this control plane")
        return client

    def add(self, host_id: str, client: AgentClient) -> None:
        self.clients[host_id] = client

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()


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
