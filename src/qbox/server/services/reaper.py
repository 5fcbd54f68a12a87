"""Auto-kill: end sandboxes whose deadline has passed.

The deadline is an absolute time in the database, so a deadline that passed
while qbox was down is enforced on the first sweep after start. The decision
is a pure function; the sweep isolates each sandbox's failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select

from qbox.core.states import SandboxState
from qbox.core.timefmt import to_wire
from qbox.server.db.tables import Sandbox
from qbox.server.services.audit import AuditLog
from qbox.server.services.audit_notes import AuditNote, acting
from qbox.server.services.context import ServiceContext
from qbox.server.services.hostsync import sync_host
from qbox.server.services.sandboxes import LIVE_STATES, SandboxService

log = logging.getLogger("qbox.reaper")


def due_for_reaping(
    candidates: Iterable[tuple[str, str, datetime | None]], now: datetime
) -> list[str]:
    """Ids of live sandboxes whose deadline is at or before ``now``.

    ``candidates`` are ``(id, status, deadline)``; no deadline means auto-kill is off.
    """
    return [
        sandbox_id
        for sandbox_id, status, deadline in candidates
        if status in LIVE_STATES and deadline is not None and deadline <= now
    ]


class Reaper:
    def __init__(self, ctx: ServiceContext, sandboxes: SandboxService, audit: AuditLog) -> None:
        self.ctx = ctx
        self.sandboxes = sandboxes
        self.audit = audit

    async def sweep(self) -> list[str]:
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            rows = (
                await session.execute(
                    select(Sandbox.id, Sandbox.status, Sandbox.deadline_at).where(
                        Sandbox.status.in_(LIVE_STATES), Sandbox.deadline_at.is_not(None),
                        Sandbox.deadline_at <= now,
                    )
                )
            ).all()
        reaped = []
        for sandbox_id in due_for_reaping(((r[0], r[1], r[2]) for r in rows), now):
            try:
                # The sandbox's end and its audit entry commit together.
                with acting(AuditNote("sandbox.expire", target_id=sandbox_id, detail="auto-kill deadline passed")):
                    ended = await self.sandboxes.end(
                        sandbox_id, SandboxState.TERMINATED,
                        f"timeout: auto-killed at {to_wire(now)} (deadline passed)",
                    )
                if ended:
                    reaped.append(sandbox_id)
            except Exception:  # noqa: BLE001 - one sandbox must not stop the sweep
                log.exception("could not reap %s", sandbox_id)
        return reaped

    async def run_forever(self) -> None:
        interval = self.ctx.settings.reaper_interval_seconds
        retention_days = self.ctx.settings.audit_retention_days
        next_prune = next_sync = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.sweep()
                if loop.time() >= next_sync:
                    next_sync = loop.time() + self.ctx.settings.host_sync_interval_seconds
                    for host_id in list(self.ctx.agents.clients):
                        await sync_host(self.ctx, self.sandboxes, host_id)
                if retention_days and loop.time() >= next_prune:
                    next_prune = loop.time() + 3600
                    await self.audit.prune(timedelta(days=retention_days))
            except Exception:  # noqa: BLE001 - e.g. database briefly locked; try next tick
                log.exception("reaper sweep failed")
            await asyncio.sleep(interval)
