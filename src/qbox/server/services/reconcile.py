"""Make the database and a host agent agree, at start.

Containers the control plane does not know (or believes ended) are removed;
sandboxes it believes alive that the host no longer runs are marked failed,
with the reason in their log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from qbox.core.errors import QboxError
from qbox.server.db.tables import Sandbox
from qbox.server.services.context import ServiceContext
from qbox.server.services.sandboxes import LIVE_STATES, SandboxService

log = logging.getLogger("qbox.reconcile")


@dataclass
class ReconcilePlan:
    remove_from_host: list[str] = field(default_factory=list)
    mark_lost: list[str] = field(default_factory=list)


def plan(on_host: dict[str, str], believed: dict[str, str]) -> ReconcilePlan:
    """Decide what to fix.

    ``on_host``: id → agent status; ``believed``: id → database status, for the
    sandboxes the database has live on that host. A sandbox still ``booting``
    at start lost its boot task with the previous process, so it is failed too.
    """
    result = ReconcilePlan()
    for sandbox_id, status in sorted(on_host.items()):
        if sandbox_id not in believed:
            result.remove_from_host.append(sandbox_id)
        elif status != "running" or believed[sandbox_id] != "running":
            result.remove_from_host.append(sandbox_id)
    for sandbox_id, status in sorted(believed.items()):
        if on_host.get(sandbox_id) != "running" or status != "running":
            result.mark_lost.append(sandbox_id)
    return result


async def reconcile_host(ctx: ServiceContext, sandboxes: SandboxService, host_id: str) -> ReconcilePlan:
    agent = ctx.agents.for_host(host_id)
    on_host = {row["id"]: str(row.get("status", "")) for row in await agent.list_sandboxes()}
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(Sandbox.id, Sandbox.status).where(Sandbox.host_id == host_id,
                                                         Sandbox.status.in_(LIVE_STATES))
            )
        ).all()
    decided = plan(on_host, {row[0]: row[1] for row in rows})
    for sandbox_id in decided.mark_lost:
        await sandboxes.mark_lost(
            sandbox_id, f"lost: not running on host {host_id} when the control plane started"
        )
    for sandbox_id in decided.remove_from_host:
        try:
            await agent.delete_sandbox(sandbox_id)
            log.info("reconcile: removed %s from host %s", sandbox_id, host_id)
        except QboxError as exc:
            log.error("reconcile: could not remove %s: %s", sandbox_id, exc.message)
    return decided
