"""Two replicas on one database race their reapers over the same expired sandboxes."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from qbox.core.states import SandboxState
from qbox.core.timefmt import utcnow
from qbox.server.db.tables import AuditEntry, Sandbox, SandboxEvent
from qbox.server.services.audit import AuditService
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import SandboxLifecycle
from qbox.server.services.reaper import Reaper
from tests.unit.server.service_db import HOSTS, HostRecorder, add_sandbox, service_context

EXPIRED = 60


def _replica(ctx: ServiceContext) -> tuple[Reaper, list[HostRecorder]]:
    recorders = [HostRecorder() for _ in HOSTS]
    for host_id, recorder in zip(HOSTS, recorders, strict=True):
        ctx.agents.add(host_id, recorder)  # type: ignore[arg-type]
    return Reaper(ctx, SandboxLifecycle(ctx), AuditService(ctx)), recorders


async def test_two_replicas_end_each_expired_sandbox_once(tmp_path: Path, database: str | None) -> None:
    async for first in service_context(tmp_path, database):
        async for second in service_context(tmp_path, database, seed=False):
            past = utcnow() - timedelta(seconds=1)
            expired = [await add_sandbox(first, SandboxState.RUNNING, host_id=HOSTS[n % 2], deadline=past)
                       for n in range(EXPIRED)]
            alive = await add_sandbox(first, SandboxState.RUNNING, host_id=HOSTS[0],
                                      deadline=past + timedelta(hours=1))
            (reaper_a, hosts_a), (reaper_b, hosts_b) = _replica(first), _replica(second)

            swept = await asyncio.gather(reaper_a.sweep(), reaper_b.sweep(), reaper_a.sweep(), reaper_b.sweep())

            ended = [sandbox_id for sweep in swept for sandbox_id in sweep]
            assert sorted(ended) == sorted(expired)  # every one, by one sweep only
            kills = Counter(sandbox_id for recorder in hosts_a + hosts_b for sandbox_id in recorder.deleted)
            assert kills == Counter(expired)
            async with first.sessions() as session:
                statuses = {sandbox_id: status for sandbox_id, status in
                            (await session.execute(select(Sandbox.id, Sandbox.status))).all()}
                reasons = Counter((await session.execute(
                    select(SandboxEvent.sandbox_id)
                    .where(SandboxEvent.message.like("timeout: auto-killed%")))).scalars().all())
                audited = Counter((await session.execute(
                    select(AuditEntry.target_id).where(AuditEntry.action == "sandbox.expire"))).scalars().all())
            assert all(statuses[sandbox_id] == SandboxState.TERMINATED for sandbox_id in expired)
            assert statuses[alive] == SandboxState.RUNNING
            assert reasons == Counter(expired) and audited == Counter(expired)
