"""Auto-kill: end sandboxes whose deadline has passed.

The deadline is an absolute time in the database, so a deadline that passed
while qbox was down is enforced on the first sweep after start. The decision
is a pure function; the sweep isolates each sandbox's failure. Every replica
sweeps: each claims a sandbox before ending it (db/claims.py), so replicas on
one PostgreSQL database split the expired sandboxes instead of queueing on the
same rows, and the conditional change makes each end (and its kill) happen once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from qbox.core.states import LIVE_STATES, SandboxState
from qbox.core.timefmt import to_wire
from qbox.server.db import claims
from qbox.server.db.tables import Sandbox
from qbox.server.services.audit import AuditService
from qbox.server.services.audit_notes import AuditNote, acting
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import Change, LifecycleEvent, SandboxLifecycle, values_of
from qbox.server.services.periodic import each


def due_for_reaping(
    candidates: Iterable[tuple[str, str, datetime | None]], now: datetime
) -> list[str]:
    """Ids of live sandboxes whose deadline is at or before ``now``.

    ``candidates`` are ``(id, status, deadline)``; no deadline means auto-kill is off.
    """
    return [
        sandbox_id
        for sandbox_id, status, deadline in candidates
        if SandboxState(status) in LIVE_STATES and deadline is not None and deadline <= now
    ]


class Reaper:
    def __init__(self, ctx: ServiceContext, lifecycle: SandboxLifecycle, audit: AuditService) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle
        self.audit = audit

    async def sweep(self) -> list[str]:
        """One pass: the ids of the sandboxes it ended."""
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            rows = (
                await session.execute(
                    select(Sandbox.id, Sandbox.status, Sandbox.deadline_at).where(
                        Sandbox.status.in_(values_of(LIVE_STATES)), Sandbox.deadline_at.is_not(None),
                        Sandbox.deadline_at <= now,
                    )
                )
            ).all()
        due = due_for_reaping(((r[0], r[1], r[2]) for r in rows), now)
        ended = await each("reaping", due, lambda sandbox_id: self._reap(sandbox_id, now))
        return [sandbox_id for sandbox_id in due if ended.get(sandbox_id)]

    async def _reap(self, sandbox_id: str, now: datetime) -> bool:
        async with self.ctx.sessions() as session:
            still_due = select(Sandbox.id).where(
                Sandbox.id == sandbox_id, Sandbox.status.in_(values_of(LIVE_STATES)),
                Sandbox.deadline_at <= now)
            if not await claims.claim(session, still_due):
                return False  # ended meanwhile, or another replica is ending it
            # The sandbox's end and its audit entry commit together, with the claim.
            note = AuditNote("sandbox.expire", target_id=sandbox_id, detail="auto-kill deadline passed")
            with acting(note):
                ended = await self.lifecycle.end(
                    sandbox_id, Change.of(LifecycleEvent.DEADLINE_REACHED, at=to_wire(now)), session=session)
        if ended:
            await self.audit.record(note, note.success_status)
        return ended
