"""Notice sandboxes that ended on their own: their init died (OOM, a crash) or the host lost them.

Runs periodically beside the reaper. Only sandboxes the database has as
``running`` are considered, so a sandbox still booting is never mistaken for
a lost one; unknown containers are left to the start-up reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select

from qbox.core.errors import QboxError
from qbox.core.sandbox_ends import describe_end
from qbox.core.states import SandboxState
from qbox.server.db.tables import Sandbox
from qbox.server.services.context import ServiceContext
from qbox.server.services.sandboxes import SandboxService

log = logging.getLogger("qbox.hostsync")


def ended_on_host(running: Iterable[str], on_host: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(id, reason) for each sandbox believed running that its host no longer runs."""
    ended = []
    for sandbox_id in sorted(running):
        row = on_host.get(sandbox_id)
        if row is None:
            ended.append((sandbox_id, "lost: the host no longer has this sandbox"))
        elif row.get("status") != "running":
            # The agent's exitReason is its own shorthand: the user reads plain words.
            ended.append((sandbox_id, f"failed: {describe_end(row.get('exitReason'))}"))
    return ended


async def sync_host(ctx: ServiceContext, sandboxes: SandboxService, host_id: str) -> list[tuple[str, str]]:
    async with ctx.sessions() as session:
        running = set((await session.execute(
            select(Sandbox.id).where(Sandbox.host_id == host_id,
                                     Sandbox.status == SandboxState.RUNNING.value))).scalars().all())
    if not running:
        return []
    try:
        rows = await ctx.agents.for_host(host_id).list_sandboxes()
    except QboxError as exc:
        log.warning("host %s did not answer the sync: %s", host_id, exc.message)
        return []
    decided = ended_on_host(running, {row["id"]: row for row in rows})
    for sandbox_id, reason in decided:
        await sandboxes.end(sandbox_id, SandboxState.FAILED, reason, level="error")
    return decided
