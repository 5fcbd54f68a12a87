"""Hosts as operators see them: list, get, drain, uncordon, remove; and each host's report.

A host's row holds its liveness as the host monitor judged it (``ready``,
``unhealthy``, ``down``), whether an operator drained it, and the figures of
its last report (heartbeat or health call). What the public ``status`` says
folds the two: a host that answers and is drained is ``draining``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import ConflictError, NotFoundError, ValidationError
from qbox.core.states import LIVE_STATES
from qbox.protocol.host import Health
from qbox.server.db.tables import Host, Sandbox, Template, WarmSandbox
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import Change, LifecycleEvent, SandboxLifecycle, values_of

log = logging.getLogger("qbox.hosts")

READY, UNHEALTHY, DOWN, DRAINING = "ready", "unhealthy", "down", "draining"
STATUSES = (READY, DRAINING, UNHEALTHY, DOWN)
EMBEDDED, JOINED = "embedded", "joined"
_IMAGES_LOCK = "hosts.images"


def public_status(host: Host) -> str:
    if host.status in (UNHEALTHY, DOWN):
        return host.status
    return DRAINING if host.draining else READY


def record_report(host: Host, report: Health) -> None:
    """Copy what a host said of itself onto its row (figures it left out stay as they were)."""
    host.version = report.version
    host.runtimes = sorted(set(report.runtimes) | {report.runtime})
    if report.hostname:
        host.hostname = report.hostname
    if report.capacity is not None:
        host.total_vcpus = report.capacity.vcpus
        host.total_memory_mb = report.capacity.memory_mb
        host.disk_total_mb = report.capacity.disk_total_mb
        host.disk_free_mb = report.capacity.disk_free_mb
        host.sandbox_disks_mb = report.capacity.sandbox_disks_mb
    if report.usage is not None:
        host.cpu_percent = report.usage.cpu_percent
        host.memory_used_mb = report.usage.memory_used_mb
    host.max_sandboxes = report.max_sandboxes
    host.images = sorted(set(report.images))
    if report.labels:
        host.labels = {**host.labels, **report.labels}


async def hold_image(ctx: ServiceContext, host_id: str, digest: str) -> None:
    """Note at once that a host now holds an image (built or imported there), so the next
    spawn prefers it; its next report says the same, or that the image went."""
    # Two builds ending at once must not each write the list without the other's image: the
    # row is locked on PostgreSQL, and this replica's writers take turns (SQLite has no lock).
    lock = ctx.extras.setdefault(_IMAGES_LOCK, asyncio.Lock())
    async with lock, ctx.sessions() as session:
        host = (await session.execute(select(Host).where(Host.id == host_id).with_for_update())).scalar_one_or_none()
        if host is not None and digest not in host.images:
            host.images = sorted({*host.images, digest})
            await session.commit()


@dataclass(frozen=True)
class Reserved:
    """What the live sandboxes placed on a host reserve."""

    sandboxes: int = 0
    vcpus: int = 0
    memory_mb: int = 0
    disk_mb: int = 0


@dataclass(frozen=True)
class HostView:
    host: Host
    reserved: Reserved
    # Templates whose image this host holds.
    templates: list[str]

    @property
    def status(self) -> str:
        return public_status(self.host)


async def reserved_on(session: AsyncSession, host_ids: Iterable[str]) -> dict[str, Reserved]:
    """What the live sandboxes and the pooled ones (warm pools hold host capacity too)
    reserve on each host."""
    ids = list(host_ids)
    found: dict[str, Reserved] = {}
    for model, live in ((Sandbox, Sandbox.status.in_(values_of(LIVE_STATES))), (WarmSandbox, true())):
        query = (select(model.host_id, func.count(), func.coalesce(func.sum(model.vcpus), 0),
                        func.coalesce(func.sum(model.memory_mb), 0),
                        func.coalesce(func.sum(model.disk_size_mb), 0))
                 .where(model.host_id.in_(ids), live).group_by(model.host_id))
        for host_id, count, vcpus, memory_mb, disk_mb in (await session.execute(query)).all():
            was = found.get(str(host_id), Reserved())
            found[str(host_id)] = Reserved(was.sandboxes + int(count), was.vcpus + int(vcpus),
                                           was.memory_mb + int(memory_mb),
                                           was.disk_mb + int(disk_mb or 0))
    return found


async def _templates_by_digest(session: AsyncSession, hosts: Sequence[Host]) -> dict[str, list[str]]:
    digests = sorted({digest for host in hosts for digest in host.images})
    if not digests:
        return {}
    found: dict[str, list[str]] = {}
    rows = (await session.execute(select(Template.id, Template.image_digest)
                                  .where(Template.image_digest.in_(digests)))).all()
    for template_id, digest in rows:
        found.setdefault(digest, []).append(template_id)
    return found


class HostService:
    def __init__(self, ctx: ServiceContext, lifecycle: SandboxLifecycle) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle

    async def find(self, status: str | None = None) -> list[HostView]:
        if status is not None and status not in STATUSES:
            raise ValidationError.for_fields({"status": f"must be one of {', '.join(STATUSES)}"})
        async with self.ctx.sessions() as session:
            hosts = list((await session.execute(
                select(Host).where(Host.removed_at.is_(None)).order_by(Host.created_at, Host.id)
            )).scalars().all())
            views = await self._views(session, hosts)
        return [view for view in views if status is None or view.status == status]

    async def get(self, host_id: str) -> HostView:
        async with self.ctx.sessions() as session:
            host = await self._host(session, host_id)
            return (await self._views(session, [host]))[0]

    async def drain(self, host_id: str) -> HostView:
        """No new sandboxes go to the host; those running there run to their end."""
        return await self._set_draining(host_id, True)

    async def uncordon(self, host_id: str) -> HostView:
        return await self._set_draining(host_id, False)

    async def remove(self, host_id: str) -> None:
        """Forget a joined host: its credential stops working and its live sandboxes end."""
        async with self.ctx.sessions() as session:
            host = await self._host(session, host_id)
            if host.kind == EMBEDDED:
                raise ConflictError(f"host {host_id} is qbox up's own agent: stop qbox up instead",
                                    details={"hostId": host_id, "kind": host.kind})
            host.removed_at = self.ctx.clock()
            host.credential_hash = None
            host.status = DOWN
            live = list((await session.execute(select(Sandbox.id).where(
                Sandbox.host_id == host_id, Sandbox.status.in_(values_of(LIVE_STATES))))).scalars())
            await session.commit()
        for sandbox_id in live:
            # Removal from the host is tried (it may still answer); a failure is only logged.
            await self.lifecycle.end(sandbox_id, Change.of(LifecycleEvent.HOST_REMOVED, host=host_id))
        await self.ctx.agents.drop(host_id)
        log.warning("host %s removed: its credential is revoked, %d sandbox(es) ended", host_id, len(live))

    async def _set_draining(self, host_id: str, draining: bool) -> HostView:
        async with self.ctx.sessions() as session:
            await self._host(session, host_id)
            await session.execute(update(Host).where(Host.id == host_id).values(draining=draining))
            await session.commit()
        return await self.get(host_id)

    async def _host(self, session: AsyncSession, host_id: str) -> Host:
        host = await session.get(Host, host_id)
        if host is None or host.removed_at is not None:
            raise NotFoundError(f"host {host_id} not found", details={"hostId": host_id})
        return host

    async def _views(self, session: AsyncSession, hosts: Sequence[Host]) -> list[HostView]:
        reserved = await reserved_on(session, [host.id for host in hosts])
        by_digest = await _templates_by_digest(session, hosts)
        return [HostView(host, reserved.get(host.id, Reserved()),
                         sorted({t for digest in host.images for t in by_digest.get(digest, [])}))
                for host in hosts]
