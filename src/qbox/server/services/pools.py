"""Warm pools: sandboxes booted from a template before anyone asks, claimed by spawns.

A template with a pool size keeps that many pooled sandboxes (booting and
ready) of its current build. They are placed as spawns are, count against
their host's capacity (``hosts.reserved_on``) and, for one template, spread
over the hosts that may run it. A pooled sandbox has a ``warm_sandboxes`` row
and no ``sandboxes`` row, so no user sees it; a spawn that claims one
(``claim``) deletes the first and writes the second in one transaction. On
PostgreSQL the claim skips rows another claim holds (``FOR UPDATE SKIP
LOCKED``); on SQLite it is one conditional DELETE under the write lock. Either
way a pooled sandbox is handed out once.

Every replica runs the loop (``tick``, a ``periodic.Periodic`` that a claim wakes): first the rows that must go (their
template deleted, rebuilt or shrunk, past ``QBOX_WARM_POOL_MAX_AGE``, their
host down, a boot nobody finishes), then each pool refilled. A template's
refill takes the pool's lock and counts again under it, so replicas never
overfill a pool. The host ends a pooled sandbox itself past its max age plus
``DEADLINE_SLACK`` should no control plane remain to do it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import zlib
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import FeatureDisabledError, QboxError, UnavailableError
from qbox.core.ids import new_sandbox_id
from qbox.core.states import LIVE_STATES
from qbox.protocol.sandboxes import SandboxSpec
from qbox.server.agent_client import AgentClient
from qbox.server.db.tables import Host, Sandbox, Template, WarmSandbox
from qbox.server.services.admission import Resources, Shortfall
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import values_of
from qbox.server.services.periodic import each
from qbox.server.services.placement import Placement, request_for
from qbox.server.services.sandbox_startup import StartPlan, wait_ready
from qbox.server.services.templates import sandbox_env
from qbox.server.settings import ServerSettings

log = logging.getLogger("qbox.pools")

BOOTING, READY = "booting", "ready"
# How often every pool is looked at when no claim wakes the loop sooner.
REFILL_SECONDS = 5.0
# The host's own deadline for a pooled sandbox: its max age and this.
DEADLINE_SLACK = timedelta(minutes=5)
# A boot still unfinished this long past its template's ready timeout was left by a dead replica.
BOOT_GRACE = timedelta(minutes=5)
# After a failed boot a template's pool waits 2, 4, 8 … s (at most this) before booting again.
MAX_BACKOFF_SECONDS = 300.0
DOWN = "down"
# An eager pooled sandbox is ready once its kernel is: asked every KERNEL_POLL_SECONDS, this long.
KERNEL_WAIT_SECONDS = 60.0
KERNEL_POLL_SECONDS = 0.05


def pool_size(template: Template, settings: ServerSettings) -> int:
    """The template's effective pool size: its own, or QBOX_WARM_POOL_DEFAULT for a built-in."""
    size = template.warm_pool_size
    if size is None:
        size = settings.warm_pool_default if template.builtin else 0
    return max(0, min(size, settings.warm_pool_max_size))


def pool_interpreter(template: Template) -> str:
    """Pooled sandboxes start their kernel at boot when the template or its pool says so."""
    return "eager" if template.code_interpreter == "eager" or template.warm_pool_eager else "lazy"


def pool_resources(template: Template) -> Resources:
    """What a pooled sandbox of ``template`` holds: the template's defaults."""
    return Resources(template.default_vcpus, template.default_memory_mb, template.default_disk_mb)


@dataclass(frozen=True)
class PoolCounts:
    ready: int = 0
    booting: int = 0
    # Live sandboxes of the template that came from its pool.
    claimed: int = 0


@dataclass(frozen=True)
class PoolView:
    """A template's pool as its API answer shows it."""

    size: int
    eager: bool
    counts: PoolCounts


@dataclass(frozen=True)
class PooledBoot:
    """A pooled sandbox to boot: its row's identity, what its host is asked, what runs then."""

    id: str
    template_id: str
    host_id: str
    spec: SandboxSpec
    plan: StartPlan


@dataclass(frozen=True)
class Wanted:
    """What a spawn asks of a pooled sandbox (spec.md's matching rule)."""

    resources: Resources
    allow_internet_access: bool


async def counts(session: AsyncSession, template_ids: Collection[str]) -> dict[str, PoolCounts]:
    """Each template's pool as the API shows it."""
    ids = sorted(template_ids)
    if not ids:
        return {}
    pooled = Counter[tuple[str, str]]()
    for template_id, status, n in (await session.execute(
            select(WarmSandbox.template_id, WarmSandbox.status, func.count())
            .where(WarmSandbox.template_id.in_(ids))
            .group_by(WarmSandbox.template_id, WarmSandbox.status))).all():
        pooled[(template_id, status)] = int(n)
    claimed = {template_id: int(n) for template_id, n in (await session.execute(
        select(Sandbox.template_id, func.count())
        .where(Sandbox.template_id.in_(ids), Sandbox.from_pool.is_(True),
               Sandbox.status.in_(values_of(LIVE_STATES)))
        .group_by(Sandbox.template_id))).all()}
    return {tid: PoolCounts(pooled[(tid, READY)], pooled[(tid, BOOTING)], claimed.get(tid, 0))
            for tid in ids}


async def claim(session: AsyncSession, template: Template, wanted: Wanted,
                now: datetime, max_age: timedelta) -> WarmSandbox | None:
    """Take a ready pooled sandbox that matches, deleting its row in the caller's transaction
    (which must not have written yet: on SQLite this is its first statement); None if none
    does. Committed, it is the caller's alone; rolled back, it is back in the pool."""
    match = (select(WarmSandbox.id)
             .where(WarmSandbox.template_id == template.id, WarmSandbox.status == READY,
                    WarmSandbox.build_generation == template.build_generation,
                    WarmSandbox.image_digest == template.image_digest,
                    WarmSandbox.runtime == template.runtime,
                    WarmSandbox.allow_internet_access.is_(wanted.allow_internet_access),
                    WarmSandbox.disk_size_mb == wanted.resources.disk_mb,
                    WarmSandbox.vcpus >= wanted.resources.vcpus,
                    WarmSandbox.memory_mb >= wanted.resources.memory_mb,
                    WarmSandbox.created_at > now - max_age)
             .order_by(WarmSandbox.created_at, WarmSandbox.id).limit(1))
    take = delete(WarmSandbox).where(WarmSandbox.status == READY).returning(WarmSandbox)
    if session.get_bind().dialect.name == "postgresql":
        # Concurrent claims each lock a different row, or find none left, without waiting.
        picked = (await session.execute(match.with_for_update(skip_locked=True))).scalar_one_or_none()
        if picked is None:
            return None
        take = take.where(WarmSandbox.id == picked)
    else:
        take = take.where(WarmSandbox.id == match.scalar_subquery())
    taken = (await session.execute(take, execution_options={"synchronize_session": False})).scalars().first()
    return taken


async def views(session: AsyncSession, templates: Iterable[Template],
                settings: ServerSettings) -> dict[str, PoolView]:
    """Each template's pool: its effective size and what it holds."""
    listed = list(templates)
    found = await counts(session, [t.id for t in listed])
    return {t.id: PoolView(pool_size(t, settings), t.warm_pool_eager, found[t.id]) for t in listed}


class WarmPools:
    """Keeps every template's pool filled; one per control-plane process."""

    def __init__(self, ctx: ServiceContext, placement: Placement) -> None:
        self.ctx = ctx
        self.placement = placement
        self.wake = asyncio.Event()
        self._boots: dict[str, asyncio.Task[None]] = {}
        # Per template: failed boots in a row, and when it may boot again.
        self._failures: dict[str, tuple[int, float]] = {}

    @property
    def max_age(self) -> timedelta:
        return timedelta(seconds=self.ctx.settings.warm_pool_max_age_seconds)

    async def views(self, templates: Iterable[Template]) -> dict[str, PoolView]:
        """The warm pools of templates the caller may see."""
        async with self.ctx.sessions() as session:
            return await views(session, templates, self.ctx.settings)

    def refill_soon(self) -> None:
        """A claim took a pooled sandbox: refill now rather than at the next tick."""
        self.wake.set()

    async def tick(self) -> dict[str, list[str]]:
        """Remove what must go, then refill every pool; the sandboxes each refill started."""
        await self.prune()
        async with self.ctx.sessions() as session:
            templates = list((await session.execute(
                select(Template).where(Template.status == "ready"))).scalars().all())
        wanted = [t.id for t in templates if pool_size(t, self.ctx.settings) > 0]
        return await each("warm pool of", wanted, self.refill)

    # --- removal -----------------------------------------------------------------

    async def prune(self) -> list[str]:
        """Remove pooled sandboxes no spawn should get; the ids removed."""
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            rows = list((await session.execute(
                select(WarmSandbox).order_by(WarmSandbox.created_at))).scalars().all())
            if not rows:
                return []
            templates = {t.id: t for t in (await session.execute(select(Template).where(
                Template.id.in_(sorted({r.template_id for r in rows}))))).scalars().all()}
            hosts = {h.id: h for h in (await session.execute(select(Host).where(
                Host.id.in_(sorted({r.host_id for r in rows}))))).scalars().all()}
        doomed = _doomed(rows, templates, hosts, self.ctx.settings, now, self.max_age,
                         booting_here=set(self._boots))
        removed = []
        for row, why in doomed:
            if await self.remove(row, why, on_host=hosts.get(row.host_id) is not None
                                 and hosts[row.host_id].status != DOWN):
                removed.append(row.id)
        return removed

    async def remove(self, row: WarmSandbox, why: str, *, on_host: bool = True) -> bool:
        """Delete the row unless a claim took it first, then the container. A boot in flight
        finds its row gone and removes its container itself."""
        async with self.ctx.sessions() as session:
            gone = await session.execute(delete(WarmSandbox).where(
                WarmSandbox.id == row.id, WarmSandbox.status == row.status))
            await session.commit()
        if not getattr(gone, "rowcount", 0):
            return False
        log.info("pooled sandbox %s of %s removed: %s", row.id, row.template_id, why)
        if on_host and row.id not in self._boots:
            await self._delete_on_host(row.host_id, row.id)
        return True

    async def drain(self, template_id: str) -> int:
        """Remove every pooled sandbox of a template (it is being deleted)."""
        async with self.ctx.sessions() as session:
            rows = list((await session.execute(
                select(WarmSandbox).where(WarmSandbox.template_id == template_id))).scalars().all())
        return sum([await self.remove(row, "its template is deleted") for row in rows])

    async def _delete_on_host(self, host_id: str, sandbox_id: str) -> None:
        try:
            await self.ctx.agents.for_host(host_id).sandboxes.delete(sandbox_id)
        except QboxError as exc:
            # The host ends it at its deadline; a reconcile at start removes it sooner.
            log.warning("pooled sandbox %s not removed from host %s: %s", sandbox_id, host_id, exc.message)

    # --- refill ------------------------------------------------------------------

    async def refill(self, template_id: str) -> list[str]:
        """Place and boot what the template's pool lacks, one sandbox per transaction; the new
        sandboxes' ids."""
        if self._backing_off(template_id):
            return []
        added: list[PooledBoot] = []
        async with self.ctx.sessions() as session:
            while (placed := await self._add_one(session, template_id)) is not None:
                added.append(placed)
        # Booted once every row is placed: a boot that fails at once drops its row, and the
        # loop above would place it again.
        for boot in added:
            self._start_boot(boot)
        return [boot.id for boot in added]

    def _backing_off(self, template_id: str) -> bool:
        _failed, not_before = self._failures.get(template_id, (0, 0.0))
        return asyncio.get_running_loop().time() < not_before

    async def _add_one(self, session: AsyncSession, template_id: str) -> PooledBoot | None:
        """One pooled sandbox's row, placed, if the pool lacks one and a host has room.

        The pool's lock is held to commit, so replicas count it one at a time. Only one
        host's placement row is locked: refills of two templates, and spawns (which lock a
        host, then share the template's row), never wait on each other in a circle."""
        try:
            if not await _lock_pool(session, template_id):
                return None
            template = (await session.execute(select(Template).where(Template.id == template_id)
                                              .execution_options(populate_existing=True))).scalar_one()
            per_host = Counter({host_id: int(n) for host_id, n in (await session.execute(
                select(WarmSandbox.host_id, func.count())
                .where(WarmSandbox.template_id == template_id,
                       WarmSandbox.build_generation == template.build_generation)
                .group_by(WarmSandbox.host_id))).all()})
            if sum(per_host.values()) >= pool_size(template, self.ctx.settings):
                return None
            need = request_for(template, pool_resources(template))
            decision = await self.placement.decide(need, session=session)
            # The host with the fewest of this pool's sandboxes; the scheduler's order breaks ties.
            ranked = sorted(enumerate(decision.hosts), key=lambda pair: (per_host[pair[1]], pair[0]))
            if not ranked:
                return None
            host_id = ranked[0][1]
            room = await self.placement.room_on(session, host_id, need)
            if room is None or isinstance(room, Shortfall):
                return None  # full since the snapshot: the next tick looks again
            row = WarmSandbox(
                id=new_sandbox_id(), template_id=template_id, host_id=host_id, status=BOOTING,
                build_generation=template.build_generation, image_digest=template.image_digest,
                runtime=template.runtime, vcpus=need.resources.vcpus,
                memory_mb=need.resources.memory_mb, disk_size_mb=need.resources.disk_mb,
                allow_internet_access=template.allow_internet_access, created_at=self.ctx.clock())
            session.add(row)
            await session.commit()
            # Copied now: a later rollback in this session expires the rows it loaded.
            return PooledBoot(row.id, template_id, host_id, self._spec(row, template), StartPlan.of(template))
        finally:
            if session.in_transaction():
                await session.rollback()

    # --- boots -------------------------------------------------------------------

    def _spec(self, row: WarmSandbox, template: Template) -> SandboxSpec:
        return SandboxSpec.model_construct(
            id=row.id, image_digest=row.image_digest, envs=sandbox_env(template), vcpus=row.vcpus,
            memory_mb=row.memory_mb, disk_size_mb=row.disk_size_mb,
            allow_internet_access=row.allow_internet_access, runtime=row.runtime,
            user=template.default_user or None, workdir=template.workdir or None,
            image_pull_ref=template.registry_ref or None,
            deadline_at=row.created_at + self.max_age + DEADLINE_SLACK,
            code_interpreter=pool_interpreter(template))

    def _start_boot(self, boot: PooledBoot) -> None:
        task = asyncio.create_task(self._boot(boot), name=f"pool boot {boot.id}")
        self._boots[boot.id] = task
        task.add_done_callback(functools.partial(_forget_task, self._boots, boot.id))

    async def _boot(self, row: PooledBoot) -> None:
        agent = self.ctx.agents.for_host(row.host_id)
        try:
            await agent.sandboxes.create(row.spec)
            failure = await self._start_commands(row, row.plan)
            if failure is None and row.spec.code_interpreter == "eager":
                await kernel_started(agent, row.id)
        except asyncio.CancelledError:
            await self._forget(row, "its boot was interrupted (control plane shutting down)")
            raise
        except Exception as exc:  # noqa: BLE001 - a failed boot is retried later, never a hang
            failure = exc.message if isinstance(exc, QboxError) else str(exc)
        if failure is not None:
            failures = self._failures.get(row.template_id, (0, 0.0))[0] + 1
            wait = min(MAX_BACKOFF_SECONDS, 2.0 ** failures)
            self._failures[row.template_id] = (failures, asyncio.get_running_loop().time() + wait)
            log.warning("pooled sandbox %s of %s failed to boot: %s (next try in %.0f s)",
                        row.id, row.template_id, failure, wait)
            await self._forget(row, "its boot failed")
            return
        self._failures.pop(row.template_id, None)
        async with self.ctx.sessions() as session:
            booted = await session.execute(update(WarmSandbox).where(
                WarmSandbox.id == row.id, WarmSandbox.status == BOOTING)
                .values(status=READY, ready_at=self.ctx.clock()))
            await session.commit()
        if not getattr(booted, "rowcount", 0):
            # Removed while booting (template deleted, pool shrunk): the container goes too.
            await self._delete_on_host(row.host_id, row.id)

    async def _start_commands(self, row: PooledBoot, plan: StartPlan) -> str | None:
        """The template's startCmd and readyCmd, as a spawn runs them (the start command's
        output is not kept: a pooled sandbox has no log until it is claimed)."""
        if not plan.start_cmd and not plan.ready_cmd:
            return None
        agent = self.ctx.agents.for_host(row.host_id)
        if plan.start_cmd:
            await agent.processes.start(row.id, plan.start(plan.start_cmd))
        if not plan.ready_cmd:
            return None

        async def still_booting() -> bool:
            async with self.ctx.sessions() as session:
                return await session.get(WarmSandbox, row.id) is not None
        return await wait_ready(agent, row.id, plan, still_booting)

    async def _forget(self, row: PooledBoot, why: str) -> None:
        async with self.ctx.sessions() as session:
            await session.execute(delete(WarmSandbox).where(WarmSandbox.id == row.id,
                                                            WarmSandbox.status == BOOTING))
            await session.commit()
        log.info("pooled sandbox %s of %s removed: %s", row.id, row.template_id, why)
        await self._delete_on_host(row.host_id, row.id)

    async def shutdown(self) -> None:
        tasks = list(self._boots.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def kernel_started(agent: AgentClient, sandbox_id: str,
                         wait: float = KERNEL_WAIT_SECONDS) -> bool:
    """Wait until an eager sandbox's default kernel has started (or it has none), so a
    pooled sandbox is ``ready`` only once code answers at once; False past ``wait`` (it is
    pooled anyway: the first code call starts what did not)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        try:
            found = (await agent.code.contexts(sandbox_id)).contexts
        except FeatureDisabledError:
            return True  # no Jupyter kernels in the template: nothing to wait for
        except UnavailableError:
            found = []  # its interpreter is still starting up
        if found and all(context.state != "starting" for context in found):
            return True
        await asyncio.sleep(KERNEL_POLL_SECONDS)
    log.warning("the kernel of pooled sandbox %s did not start within %.0f s", sandbox_id, wait)
    return False


async def _lock_pool(session: AsyncSession, template_id: str) -> bool:
    """Take a template's pool lock until commit; False when the template is not ready. On
    PostgreSQL an advisory lock (the template's row is shared by spawns that hold a host's
    lock: locking the row here could close a circle); SQLite has one writer, taken by a
    write to the template's row that changes nothing."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"warm pool {template_id}".encode()) - 2**31
        await session.execute(select(func.pg_advisory_xact_lock(key)))
    else:
        await session.execute(update(Template).where(Template.id == template_id)
                              .values(build_generation=Template.build_generation))
    status = (await session.execute(select(Template.status).where(Template.id == template_id))).scalar()
    return status == "ready"


def _forget_task(tasks: dict[str, asyncio.Task[None]], sandbox_id: str, task: asyncio.Task[None]) -> None:
    if tasks.get(sandbox_id) is task:
        del tasks[sandbox_id]


def _doomed(rows: list[WarmSandbox], templates: dict[str, Template], hosts: dict[str, Host],
            settings: ServerSettings, now: datetime, max_age: timedelta, *,
            booting_here: set[str]) -> list[tuple[WarmSandbox, str]]:
    """The pooled sandboxes to remove, and why (the decision alone, without I/O)."""
    doomed: list[tuple[WarmSandbox, str]] = []
    kept: dict[str, list[WarmSandbox]] = {}
    for row in rows:
        template, host = templates.get(row.template_id), hosts.get(row.host_id)
        why = None
        if template is None or template.status not in ("ready", "building"):
            why = "its template is deleted"
        elif row.build_generation != template.build_generation or row.image_digest != template.image_digest:
            why = "its template was rebuilt"
        elif host is None or host.status == DOWN or host.removed_at is not None:
            why = f"its host {row.host_id} is down"
        elif row.created_at + max_age <= now:
            why = f"older than {int(max_age.total_seconds())} s"
        elif (row.status == BOOTING and row.id not in booting_here
              and row.created_at + timedelta(seconds=template.ready_timeout_s) + BOOT_GRACE <= now):
            why = "its boot never finished"
        if why is None:
            kept.setdefault(row.template_id, []).append(row)
        else:
            doomed.append((row, why))
    for template_id, pool in kept.items():
        extra = len(pool) - pool_size(templates[template_id], settings)
        if extra > 0:
            # Booting ones first (nothing waits on them), then the oldest.
            pool.sort(key=lambda r: (r.status != BOOTING, r.created_at))
            doomed += [(row, "its pool is smaller now") for row in pool[:extra]]
    return doomed
