"""Where a new sandbox goes, and its reservation taken atomically on that host.

The scheduler (``scheduler.schedule``) ranks the hosts from a snapshot read
without locks. Then, best first, the host's placement row is locked (an
UPDATE: SQLite's write lock, or PostgreSQL's row lock, held to commit; a row
of its own, so heartbeats writing the host's row do not queue behind
spawns), its reservations are
read again under the lock, and the request is weighed once more: if it still
fits, ``admit`` writes the sandbox's row in that same transaction; if a
concurrent spawn took the room meanwhile, the next host is tried. So spawns
on several replicas never overcommit a host, and spawns to different hosts
do not wait for each other (on PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.server.db.tables import Host, HostPlacement, Template, User
from qbox.server.services.admission import HostCapacity, Overcommit, Resources, Shortfall
from qbox.server.services.context import ServiceContext
from qbox.server.services.hosts import Reserved, reserved_on
from qbox.server.services.scheduler import Candidate, Decision, Policy, Request, schedule, weigh

T = TypeVar("T")

# Hosts tried under lock before a spawn is refused (the snapshot may be stale for each).
MAX_TRIES = 3


def request_for(template: Template, wanted: Resources) -> Request:
    """What a sandbox of ``template`` needs from a host: room, the runtime, the selector's
    labels, and the image (held, or pullable from the registry a build pushed it to)."""
    return Request(wanted, template.runtime, template.image_digest,
                   selector=dict(template.host_selector or {}), pullable=bool(template.registry_ref))


def capacity_of(host: Host) -> HostCapacity:
    """What a host last reported it can give."""
    return HostCapacity(vcpus=host.total_vcpus, memory_mb=host.total_memory_mb,
                        disk_total_mb=host.disk_total_mb, disk_free_mb=host.disk_free_mb,
                        sandbox_disks_mb=host.sandbox_disks_mb)


def candidate(host: Host, reserved: Reserved, connected: Collection[str]) -> Candidate:
    """The host as the scheduler weighs it; one this replica has no client for is not ready
    (from here its boot could not be started)."""
    found = Candidate.of(host, capacity_of(host),
                         Resources(reserved.vcpus, reserved.memory_mb, reserved.disk_mb), reserved.sandboxes)
    return found if host.id in connected else dataclasses.replace(found, status="unreachable")


async def lock_host(session: AsyncSession, host_id: str) -> Host | None:
    """Lock a host's placement row until commit and read the host fresh. Must be the
    session's first statement: a SQLite transaction that read first cannot take the write
    lock later. The host's own row stays free for its heartbeats."""
    locked = await session.execute(update(HostPlacement).where(HostPlacement.host_id == host_id)
                                   .values(placed=HostPlacement.placed + 1))
    if not getattr(locked, "rowcount", 0):
        # A host made before placement rows (or by hand): its row now, in this transaction.
        session.add(HostPlacement(host_id=host_id, placed=1))
        try:
            await session.flush()
        except IntegrityError:
            return None
    return (await session.execute(select(Host).where(Host.id == host_id)
                                  .execution_options(populate_existing=True))).scalar_one_or_none()


async def lock_user(session: AsyncSession, user_id: str) -> None:
    """Serialise one user's spawns (their quotas) when they go to different hosts."""
    await session.execute(update(User).where(User.id == user_id).values(role=User.role))


class Placement:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.policy = Policy(Overcommit.from_settings(settings), settings.scheduler_sample,
                             random.Random())

    async def decide(self, request: Request, exclude: Collection[str] = (),
                     session: AsyncSession | None = None) -> Decision:
        """The scheduler's ranking of the hosts, from their rows as they are now (read in
        ``session`` when the caller has one open)."""
        if session is None:
            async with self.ctx.sessions() as own:
                return await self.decide(request, exclude, own)
        hosts = [host for host in (await session.execute(
            select(Host).where(Host.removed_at.is_(None)))).scalars().all() if host.id not in exclude]
        reserved = await reserved_on(session, [host.id for host in hosts])
        connected = self.ctx.agents.clients
        return schedule([candidate(host, reserved.get(host.id, Reserved()), connected) for host in hosts],
                        request, self.policy)

    async def reserve(self, decision: Decision, request: Request,
                      admit: Callable[[AsyncSession, str], Awaitable[T]], *,
                      session: AsyncSession | None = None) -> T:
        """``admit(session, host_id)`` (which commits) on the first ranked host that still has
        room under its lock; the scheduler's refusal, brought up to date, if none has.

        ``session``: the caller's, with no transaction open (each host is tried in a
        transaction of its own; a host passed over is rolled back, which frees its lock)."""
        if session is None:
            async with self.ctx.sessions() as own:
                return await self.reserve(decision, request, admit, session=own)
        shortfalls: list[Shortfall] = list(decision.shortfalls)
        for host_id in decision.hosts[:MAX_TRIES]:
            room = await self.room_on(session, host_id, request)
            if isinstance(room, Shortfall):
                shortfalls.append(room)
            if room is None or isinstance(room, Shortfall):
                await session.rollback()
                continue
            return await admit(session, host_id)
        raise Decision((), decision.passed_over, tuple(shortfalls)).refusal(request)

    async def room_on(self, session: AsyncSession, host_id: str, request: Request) -> Shortfall | float | None:
        """Lock the host's placement row and weigh ``request`` on it afresh: its headroom, what
        it lacks, or None when it takes no sandbox now (gone, not ready, draining)."""
        host = await lock_host(session, host_id)
        if host is None or host.removed_at is not None:
            return None
        reserved = (await reserved_on(session, [host_id])).get(host_id, Reserved())
        fresh = candidate(host, reserved, self.ctx.agents.clients)
        if fresh.status != "ready" or fresh.draining:
            return None
        return weigh(fresh, request.resources, self.policy.overcommit)
