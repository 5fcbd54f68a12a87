"""Services over a real, migrated database (SQLite or PostgreSQL), without the app: for lifecycle
and loop tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from qbox.core.errors import QboxError
from qbox.core.ids import new_sandbox_id
from qbox.core.states import SandboxState
from qbox.protocol.sandboxes import SandboxInfo
from qbox.server.db.engine import make_async_engine, make_sessionmaker, migrate
from qbox.server.db.tables import Host, Sandbox, SandboxEvent, Template, User
from qbox.server.services.context import AgentPool, ServiceContext
from qbox.server.settings import ServerSettings

OWNER = "usr_lifecycle"
TEMPLATE = "tpl_lifecycle"
HOSTS = ("h1", "h2")


class HostRecorder:
    """The agent calls the lifecycle and the sync make (``agent.sandboxes``): it lists
    ``listed`` and records deletions; ``fail_with`` makes both fail."""

    def __init__(self, listed: list[dict[str, Any]] | None = None,
                 fail_with: QboxError | None = None) -> None:
        self.listed = [SandboxInfo.model_validate(row) for row in listed or []]
        self.deleted: list[str] = []
        self.fail_with = fail_with
        self.sandboxes = self

    async def list(self) -> list[SandboxInfo]:
        if self.fail_with is not None:
            raise self.fail_with
        return self.listed

    async def delete(self, sandbox_id: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        await asyncio.sleep(0)
        self.deleted.append(sandbox_id)

    async def aclose(self) -> None:
        return None


async def service_context(data_dir: Path, database: str | None, *,
                          seed: bool = True) -> AsyncIterator[ServiceContext]:
    """Services on ``database`` (None: SQLite in ``data_dir``); ``seed`` adds the owner, the
    template and the hosts (a second replica on the same database does not)."""
    settings = ServerSettings(data_dir=data_dir, agent_secret="x", database_url=database)
    url = settings.resolved_database_url()
    await asyncio.to_thread(migrate, url)
    engine = make_async_engine(url)
    ctx = ServiceContext(settings=settings, sessions=make_sessionmaker(engine), agents=AgentPool())
    if seed:
        async with ctx.sessions() as session:
            session.add(User(id=OWNER, email="lifecycle@example.com", role="admin"))
            session.add(Template(id=TEMPLATE, name="lifecycle", status="ready"))
            session.add_all(Host(id=host_id, hostname=host_id, address=host_id, status="online")
                            for host_id in HOSTS)
            await session.commit()
    try:
        yield ctx
    finally:
        await engine.dispose()


async def add_sandbox(ctx: ServiceContext, state: SandboxState, *, host_id: str | None = None,
                      deadline: datetime | None = None) -> str:
    sandbox_id = new_sandbox_id()
    async with ctx.sessions() as session:
        session.add(Sandbox(id=sandbox_id, owner_id=OWNER, template_id=TEMPLATE, host_id=host_id,
                            status=state.value, vcpus=1, memory_mb=512, timeout_seconds=60,
                            deadline_at=deadline))
        await session.commit()
    return sandbox_id


async def row(ctx: ServiceContext, sandbox_id: str) -> Sandbox:
    async with ctx.sessions() as session:
        sandbox = await session.get(Sandbox, sandbox_id)
        assert sandbox is not None
        return sandbox


async def log_of(ctx: ServiceContext, sandbox_id: str) -> list[tuple[str, str]]:
    """The sandbox's log as (level, message), oldest first."""
    async with ctx.sessions() as session:
        rows = (await session.execute(select(SandboxEvent.level, SandboxEvent.message)
                                      .where(SandboxEvent.sandbox_id == sandbox_id)
                                      .order_by(SandboxEvent.id))).all()
    return [(level, message) for level, message in rows]
