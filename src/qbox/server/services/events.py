"""The sandbox log: lifecycle events, oldest first."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.timefmt import utcnow
from qbox.server.db.tables import SandboxEvent


def record(
    session: AsyncSession, sandbox_id: str, message: str, *, level: str = "info",
    component: str = "lifecycle",
) -> None:
    session.add(SandboxEvent(sandbox_id=sandbox_id, time=utcnow(), level=level,
                             component=component, message=message))


async def tail(session: AsyncSession, sandbox_id: str, limit: int) -> list[SandboxEvent]:
    rows = (
        await session.execute(
            select(SandboxEvent)
            .where(SandboxEvent.sandbox_id == sandbox_id)
            .order_by(SandboxEvent.id.desc())
            .limit(limit)
        )
    ).scalars().all()
    return list(reversed(rows))
