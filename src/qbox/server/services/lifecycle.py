"""The one owner of a sandbox's state: every change of ``status`` happens here.

An event moves a sandbox from the states it may come from to one state; the
reason is written to the sandbox's log and, when the sandbox ends, kept as
its ``endReason``:

    event                 from      to          reason
    booted                booting   running     sandbox running
    boot_failed           booting   failed      boot failed: {error}
    boot_interrupted      booting   failed      boot interrupted: control plane shutting down
    start_command_failed  booting   failed      startCmd could not be started: {error}
    never_ready           booting   failed      {why}  (readyCmd did not exit 0 within …)
    kill_requested        live      killed      killed by DELETE (api key {api_key})
    deadline_reached      live      terminated  timeout: auto-killed at {at} (deadline passed)
    ended_on_host         live      failed      failed: {why}  (the host's exitReason in plain words)
    missing_on_host       live      failed      lost: host {host} no longer has this sandbox
    boot_lost             live      failed      lost: its boot on host {host} did not finish …
    host_lost             live      failed      host lost: host {host} sent no heartbeat for {seconds} s
    host_removed          live      failed      host removed: host {host} was removed by an operator
    claim_failed          live      failed      boot failed: its pooled sandbox could not be claimed: {error}

A sandbox claimed from a warm pool (services/pools.py) starts ``running``
(``claimed_row``): its boot happened before anyone asked for it.

Each change is one conditional UPDATE on the current status, so actors that
race (a DELETE and the boot, the reaper and a DELETE, the host sync and
either) change a sandbox once: the loser's UPDATE matches no row, changes
nothing and writes no log line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import QboxError
from qbox.core.states import LIVE_STATES, TERMINAL_STATES, SandboxState
from qbox.server.db.tables import Sandbox
from qbox.server.services import events
from qbox.server.services.context import ServiceContext

log = logging.getLogger("qbox.sandboxes")


class LifecycleEvent(StrEnum):
    BOOTED = "booted"
    BOOT_FAILED = "boot_failed"
    BOOT_INTERRUPTED = "boot_interrupted"
    START_COMMAND_FAILED = "start_command_failed"
    NEVER_READY = "never_ready"
    KILL_REQUESTED = "kill_requested"
    DEADLINE_REACHED = "deadline_reached"
    ENDED_ON_HOST = "ended_on_host"
    MISSING_ON_HOST = "missing_on_host"
    BOOT_LOST = "boot_lost"
    HOST_LOST = "host_lost"
    HOST_REMOVED = "host_removed"
    CLAIM_FAILED = "claim_failed"


@dataclass(frozen=True)
class Rule:
    sources: frozenset[SandboxState]
    target: SandboxState
    reason: str
    level: str = "info"


_BOOTING = frozenset({SandboxState.BOOTING})

TABLE: dict[LifecycleEvent, Rule] = {
    LifecycleEvent.BOOTED: Rule(_BOOTING, SandboxState.RUNNING, "sandbox running"),
    LifecycleEvent.BOOT_FAILED: Rule(_BOOTING, SandboxState.FAILED, "boot failed: {error}", "error"),
    LifecycleEvent.BOOT_INTERRUPTED: Rule(_BOOTING, SandboxState.FAILED,
                                          "boot interrupted: control plane shutting down"),
    LifecycleEvent.START_COMMAND_FAILED: Rule(_BOOTING, SandboxState.FAILED,
                                              "startCmd could not be started: {error}", "error"),
    LifecycleEvent.NEVER_READY: Rule(_BOOTING, SandboxState.FAILED, "{why}", "error"),
    LifecycleEvent.KILL_REQUESTED: Rule(LIVE_STATES, SandboxState.KILLED,
                                        "killed by DELETE (api key {api_key})"),
    LifecycleEvent.DEADLINE_REACHED: Rule(LIVE_STATES, SandboxState.TERMINATED,
                                          "timeout: auto-killed at {at} (deadline passed)"),
    LifecycleEvent.ENDED_ON_HOST: Rule(LIVE_STATES, SandboxState.FAILED, "failed: {why}", "error"),
    LifecycleEvent.MISSING_ON_HOST: Rule(LIVE_STATES, SandboxState.FAILED,
                                         "lost: host {host} no longer has this sandbox", "error"),
    LifecycleEvent.BOOT_LOST: Rule(LIVE_STATES, SandboxState.FAILED,
                                   "lost: its boot on host {host} did not finish "
                                   "(the control plane stopped)", "error"),
    LifecycleEvent.HOST_LOST: Rule(LIVE_STATES, SandboxState.FAILED,
                                   "host lost: host {host} sent no heartbeat for {seconds} s", "error"),
    LifecycleEvent.HOST_REMOVED: Rule(LIVE_STATES, SandboxState.FAILED,
                                      "host removed: host {host} was removed by an operator", "error"),
    LifecycleEvent.CLAIM_FAILED: Rule(LIVE_STATES, SandboxState.FAILED,
                                      "boot failed: its pooled sandbox could not be claimed: {error}",
                                      "error"),
}


def next_state(state: SandboxState, event: LifecycleEvent) -> SandboxState | None:
    """Where ``event`` takes a sandbox in ``state``; None when it does not apply there."""
    rule = TABLE[event]
    return rule.target if state in rule.sources else None


@dataclass(frozen=True)
class Change:
    """An event that happened to a sandbox, with its reason in words."""

    event: LifecycleEvent
    reason: str

    @classmethod
    def of(cls, event: LifecycleEvent, **facts: object) -> Change:
        return cls(event, TABLE[event].reason.format(**facts))

    @property
    def rule(self) -> Rule:
        return TABLE[self.event]


def values_of(states: Iterable[SandboxState]) -> list[str]:
    """The column values of ``states``, for ``Sandbox.status.in_``."""
    return sorted(state.value for state in states)


def booting_row(**columns: Any) -> Sandbox:
    """A new sandbox's row: every sandbox starts ``booting``."""
    return Sandbox(status=SandboxState.BOOTING.value, **columns)


def claimed_row(**columns: Any) -> Sandbox:
    """The row of a sandbox claimed from a warm pool: booted already, so ``running``."""
    return Sandbox(status=SandboxState.RUNNING.value, from_pool=True, **columns)


async def lock_row(session: AsyncSession, sandbox_id: str) -> None:
    """Hold a sandbox's row until the transaction ends, so changes made beside its state (its
    envs, its ports) do not interleave with each other or with an end: an UPDATE that changes
    nothing, a row lock on PostgreSQL and the write lock on SQLite. Before any read in the
    session (a SQLite transaction that read first cannot take the write lock later)."""
    await session.execute(update(Sandbox).where(Sandbox.id == sandbox_id).values(status=Sandbox.status))


class SandboxLifecycle:
    """Applies changes to sandboxes, and what an end means beyond the row."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._when_ended: list[Callable[[str], None]] = []

    def when_ended(self, hook: Callable[[str], None]) -> None:
        """Call ``hook(sandbox_id)`` after every end that ``end`` applies (shells, followers)."""
        self._when_ended.append(hook)

    def _within(self, session: AsyncSession | None) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        return contextlib.nullcontext(session) if session is not None else self.ctx.sessions()

    async def apply(self, sandbox_id: str, change: Change, *, session: AsyncSession | None = None) -> bool:
        """Change the row if the sandbox is in one of the event's source states; else False.

        ``session``: the caller's, whose transaction claimed the row (db/claims.py); the
        change commits it, as it commits its own.
        """
        rule = change.rule
        now = self.ctx.clock()
        values: dict[str, Any] = {"status": rule.target.value}
        if rule.target in TERMINAL_STATES:
            values.update(ended_at=now, end_reason=change.reason, deadline_at=None)
        elif rule.target == SandboxState.RUNNING:
            values["booted_at"] = now
        async with self._within(session) as session:
            result = await session.execute(
                update(Sandbox)
                .where(Sandbox.id == sandbox_id, Sandbox.status.in_(values_of(rule.sources)))
                .values(**values)
            )
            changed = bool(getattr(result, "rowcount", 0))
            if changed:
                events.record(session, sandbox_id, change.reason, level=rule.level)
            await session.commit()
        return changed

    async def end(self, sandbox_id: str, change: Change, *, remove_from_host: bool = True,
                  session: AsyncSession | None = None) -> bool:
        """End a live sandbox: mark it, remove a running one from its host, close what it held.

        False if it had already ended. A sandbox still booting is removed by its
        boot task when that finishes; ``remove_from_host=False`` leaves the
        removal to a caller that knows better what its host holds. ``session`` as in ``apply``.
        """
        async with self._within(session) as reader:
            sandbox = await reader.get(Sandbox, sandbox_id)
        if sandbox is None:
            return False
        # Read before the change: in the caller's session the UPDATE refreshes the loaded row.
        was_running, host_id = sandbox.status == SandboxState.RUNNING, sandbox.host_id
        ended = await self.apply(sandbox_id, change, session=session)
        if not ended:
            return False
        if remove_from_host and was_running and host_id:
            await self.remove_from_host(sandbox_id, host_id)
        for hook in self._when_ended:
            hook(sandbox_id)
        return True

    async def remove_from_host(self, sandbox_id: str, host_id: str) -> None:
        """Delete an ended sandbox's container; a failure is logged and left to the next reconcile."""
        try:
            await self.ctx.agents.for_host(host_id).sandboxes.delete(sandbox_id)
        except QboxError as exc:
            log.error("could not remove %s from host %s: %s", sandbox_id, host_id, exc.message)
            async with self.ctx.sessions() as session:
                events.record(session, sandbox_id, f"removal from host failed: {exc.message} "
                              "(reconcile retries at the next start)", level="error")
                await session.commit()
