"""Sandbox deadlines, enforced by the agent itself: they hold while every control plane is down.

The control plane's reaper ends sandboxes at their deadline too; whichever comes first ends
the sandbox, and the other finds it ended (both ends are idempotent). The decision is pure
(``past_deadline``); the loop isolates each sandbox's failure and goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from qbox.agent.lifecycle import TIMEOUT_REASON, SandboxEvent
from qbox.agent.sandbox import Sandbox, SandboxStatus
from qbox.agent.sandboxes import SandboxManager
from qbox.core.timefmt import utcnow

log = logging.getLogger("qbox.agent.deadlines")

CHECK_SECONDS = 1.0


def past_deadline(sandboxes: Iterable[Sandbox], now: datetime) -> list[str]:
    """The running sandboxes whose deadline has come."""
    return sorted(s.id for s in sandboxes
                  if s.status is SandboxStatus.RUNNING and s.deadline_at is not None
                  and s.deadline_at <= now)


async def end_past_deadline(manager: SandboxManager, now: datetime) -> list[str]:
    """End every sandbox past its deadline; the ones actually ended by this call."""
    ended: list[str] = []
    for sandbox_id in past_deadline(manager, now):
        try:
            if await manager.end(sandbox_id, SandboxEvent.TIMED_OUT, TIMEOUT_REASON):
                log.info("sandbox %s reached its deadline: ended", sandbox_id)
                ended.append(sandbox_id)
        except Exception:  # noqa: BLE001 - one sandbox's failure must not stop the others
            log.exception("ending %s at its deadline failed", sandbox_id)
    return ended


async def enforce_deadlines(manager: SandboxManager, *, interval: float = CHECK_SECONDS,
                            clock: Callable[[], datetime] = utcnow) -> None:
    """Every ``interval`` seconds until cancelled (the agent's lifespan runs it)."""
    while True:
        await end_past_deadline(manager, clock())
        await asyncio.sleep(interval)
