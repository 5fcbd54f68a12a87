"""Make the database and a host agent agree: at start (reconcile) and then periodically.

At start, containers the control plane does not hold live are removed and
every sandbox it believes alive that the host does not run is failed. While
serving, the sync notices sandboxes that ended on their own: their init died
(OOM, a crash) or the host lost them. Which is which is ``host_view.compare``.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from qbox.core.errors import QboxError
from qbox.core.states import LIVE_STATES, SandboxState
from qbox.server.agent_client import AgentClient
from qbox.server.db.tables import Sandbox, WarmSandbox
from qbox.server.services.context import ServiceContext
from qbox.server.services.host_view import POOL_READY, HostDiff, OnHost, compare
from qbox.server.services.lifecycle import SandboxLifecycle, values_of
from qbox.server.services.periodic import each

log = logging.getLogger("qbox.hostsync")


async def sync_host(ctx: ServiceContext, lifecycle: SandboxLifecycle, host_id: str, *,
                    at_start: bool = False) -> HostDiff:
    """Compare the host's sandboxes with the database's and apply the difference."""
    agent = ctx.agents.for_host(host_id)
    sweep = host_id in ctx.agents.to_sweep
    # Listed before the rows are read: a boot in flight has its row before its container.
    listed = await agent.sandboxes.list() if at_start or sweep else None
    believed, pooled = await _believed(ctx, host_id)
    if (not (at_start or sweep) and SandboxState.RUNNING not in believed.values()
            and POOL_READY not in pooled.values()):
        return HostDiff()  # nothing the host could have ended: no need to ask it
    if listed is None:
        listed = await agent.sandboxes.list()
    on_host = {row.id: OnHost.from_agent(row) for row in listed}
    ctx.agents.to_sweep.discard(host_id)
    diff = compare(host_id, believed, on_host, at_start=at_start, sweep=sweep, pooled=pooled)
    for ending in diff.ended:
        ended = await lifecycle.end(ending.sandbox_id, ending.change, remove_from_host=False)
        if ended and ending.on_host:
            await lifecycle.remove_from_host(ending.sandbox_id, host_id)
    await _forget_pooled(ctx, agent, host_id, diff)
    for sandbox_id in diff.strangers:
        try:
            await agent.sandboxes.delete(sandbox_id)
            log.info("reconcile: removed %s from host %s", sandbox_id, host_id)
        except QboxError as exc:
            log.error("reconcile: could not remove %s: %s", sandbox_id, exc.message)
    return diff


async def _believed(ctx: ServiceContext, host_id: str) -> tuple[dict[str, SandboxState], dict[str, str]]:
    """The live sandboxes the database places on the host, and its pooled ones."""
    async with ctx.sessions() as session:
        rows = (await session.execute(
            select(Sandbox.id, Sandbox.status).where(Sandbox.host_id == host_id,
                                                     Sandbox.status.in_(values_of(LIVE_STATES)))
        )).all()
        pooled = (await session.execute(
            select(WarmSandbox.id, WarmSandbox.status).where(WarmSandbox.host_id == host_id))).all()
    return {row[0]: SandboxState(row[1]) for row in rows}, {row[0]: row[1] for row in pooled}


async def _forget_pooled(ctx: ServiceContext, agent: AgentClient, host_id: str, diff: HostDiff) -> None:
    """Pooled sandboxes the host lost (or whose boot cannot finish) lose their row; a claim
    that took one first has deleted the row already."""
    for sandbox_id in diff.pooled_gone:
        async with ctx.sessions() as session:
            gone = await session.execute(delete(WarmSandbox).where(WarmSandbox.id == sandbox_id))
            await session.commit()
        if not getattr(gone, "rowcount", 0):
            continue
        log.info("pooled sandbox %s gone from host %s: its row is removed", sandbox_id, host_id)
        if sandbox_id in diff.pooled_on_host:
            try:
                await agent.sandboxes.delete(sandbox_id)
            except QboxError as exc:
                log.error("reconcile: could not remove pooled sandbox %s: %s", sandbox_id, exc.message)


async def sync_hosts(ctx: ServiceContext, lifecycle: SandboxLifecycle) -> dict[str, HostDiff]:
    """One periodic pass over every connected host; a host that fails is logged and skipped."""
    ready = [host_id for host_id in ctx.agents.clients if ctx.agents.liveness.get(host_id, "ready") == "ready"]
    return await each("host sync of", ready,
                      lambda host_id: sync_host(ctx, lifecycle, host_id))
