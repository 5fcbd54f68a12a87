"""Sandboxes as their users ask for them: spawn, look up, extend, kill, reach on their host.

A spawn admits the sandbox, writes its row (``booting``) and hands the boot
to a background task (``sandbox_startup``); ``wait`` holds the caller until
the task settles or the wait runs out. Every change of state goes through
the lifecycle (``lifecycle``), so a DELETE racing a boot ends the sandbox once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.dotenv import system_envs
from qbox.core.errors import (
    QboxError,
    SandboxNotActiveError,
    SandboxNotFoundError,
    SshDisabledError,
    TemplateNotReadyError,
)
from qbox.core.ids import new_sandbox_id
from qbox.core.states import LIVE_STATES, SandboxState
from qbox.protocol.sandboxes import SandboxClaim, SandboxSpec
from qbox.protocol.shells import ShellQuery
from qbox.server.agent_client import AgentClient, AgentShell
from qbox.server.db.tables import Sandbox, SandboxEvent, Template
from qbox.server.services import events, pools
from qbox.server.services.admission import Resources
from qbox.server.services.context import ServiceContext
from qbox.server.principal import Principal
from qbox.server.services.lifecycle import (
    Change,
    LifecycleEvent,
    SandboxLifecycle,
    booting_row,
    claimed_row,
)
from qbox.server.services.placement import lock_user, request_for
from qbox.server.services.port_specs import PortSpec, check_specs, new_row
from qbox.server.services.pools import WarmPools, pool_size
from qbox.server.services.quotas import QuotaService
from qbox.server.services.sandbox_startup import SandboxBoots, StartPlan
from qbox.server.services.template_access import visible_template
from qbox.server.services.templates import sandbox_env
from qbox.server.settings import ServerSettings

log = logging.getLogger("qbox.sandboxes")

T = TypeVar("T")


@dataclass(frozen=True)
class SpawnRequest:
    template_id: str
    timeout_seconds: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    envs: dict[str, str] = field(default_factory=dict)
    vcpus: int | None = None
    memory_mb: int | None = None
    disk_size_mb: int | None = None
    allow_internet_access: bool | None = None
    ports: tuple[PortSpec, ...] = ()


@dataclass(frozen=True)
class Ask:
    """A spawn request with the template's and the server's defaults filled in."""

    resources: Resources
    internet: bool
    timeout: int
    now: datetime
    deadline: datetime | None

    @classmethod
    def of(cls, template: Template, request: SpawnRequest, settings: ServerSettings, now: datetime) -> Ask:
        timeout = request.timeout_seconds
        if timeout is None:
            timeout = template.default_timeout_seconds or settings.default_timeout_seconds
        vcpus = request.vcpus or template.default_vcpus or settings.default_vcpus
        memory_mb = request.memory_mb or template.default_memory_mb or settings.default_memory_mb
        disk_mb = request.disk_size_mb or template.default_disk_mb
        settings.check_caps(vcpus, memory_mb, disk_mb)
        internet = template.allow_internet_access if request.allow_internet_access is None \
            else request.allow_internet_access
        return cls(Resources(vcpus, memory_mb, disk_mb), internet, timeout, now,
                   now + timedelta(seconds=timeout) if timeout else None)

    def describe(self, runtime: str) -> str:
        wanted = self.resources
        return (f"{wanted.vcpus} vCPU, {wanted.memory_mb} MB memory, {wanted.disk_mb} MB disk, "
                f"internet {'on' if self.internet else 'off'}, {runtime}")


def _require_ready(template: Template) -> None:
    if template.status != "ready":
        raise TemplateNotReadyError(
            f"template {template.id} is {template.status}, not ready",
            details={"templateId": template.id, "status": template.status},
        )


class SandboxService:
    def __init__(self, ctx: ServiceContext, lifecycle: SandboxLifecycle, boots: SandboxBoots,
                 quotas: QuotaService, pools: WarmPools) -> None:
        self.ctx = ctx
        self.pools = pools
        self.lifecycle = lifecycle
        self.boots = boots
        self.quotas = quotas
        self.placement = pools.placement
        boots.relocate = self.relocate

    # --- queries -------------------------------------------------------------

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        async with self.ctx.sessions() as session:
            return await self._owned(session, principal, sandbox_id)

    async def find(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        template_id: str | None = None,
        limit: int | None = None,
    ) -> list[Sandbox]:
        query = select(Sandbox).order_by(Sandbox.created_at.desc())
        if not principal.is_admin:
            query = query.where(Sandbox.owner_id == principal.user_id)
        if status:
            query = query.where(Sandbox.status == status)
        if template_id:
            query = query.where(Sandbox.template_id == template_id)
        if limit:
            query = query.limit(limit)
        async with self.ctx.sessions() as session:
            return list((await session.execute(query)).scalars().all())

    async def logs(self, principal: Principal, sandbox_id: str, tail: int) -> list[SandboxEvent]:
        async with self.ctx.sessions() as session:
            await self._owned(session, principal, sandbox_id)
            return await events.tail(session, sandbox_id, tail)

    async def template_of(self, sandbox: Sandbox) -> Template | None:
        async with self.ctx.sessions() as session:
            return await session.get(Template, sandbox.template_id)

    async def require_running(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.get(principal, sandbox_id)
        if sandbox.status != SandboxState.RUNNING:
            raise not_active(sandbox)
        return sandbox

    async def relay(self, principal: Principal, sandbox_id: str,
                    call: Callable[[AgentClient], Awaitable[T]], *,
                    check: Callable[[Sandbox, Template | None], None] | None = None) -> T:
        """``call`` on the agent of a running sandbox the principal may use.

        ``check`` may refuse first, given the sandbox and its template (read in
        the same session). A sandbox its host no longer knows is marked lost,
        and the caller gets the same answer as for any sandbox that is not running.
        """
        async with self.ctx.sessions() as session:
            sandbox = await self._owned(session, principal, sandbox_id)
            if sandbox.status != SandboxState.RUNNING:
                raise not_active(sandbox)
            if check is not None:
                check(sandbox, await session.get(Template, sandbox.template_id))
        agent = self.ctx.agents.for_host(sandbox.host_id)
        try:
            return await call(agent)
        except SandboxNotFoundError:
            # Ended as host sync ends it: its shells and start-command follower go too.
            await self.lifecycle.end(sandbox_id, Change.of(LifecycleEvent.MISSING_ON_HOST,
                                                           host=sandbox.host_id),
                                     remove_from_host=False)
            sandbox = await self.get(principal, sandbox_id)
            raise not_active(sandbox) from None

    async def open_shell(self, principal: Principal, sandbox_id: str, query: ShellQuery) -> AgentShell:
        """A shell on the agent, if the sandbox runs and its template allows shells."""
        return await self.relay(principal, sandbox_id, lambda agent: agent.shells.open(sandbox_id, query),
                                check=_ssh_enabled)

    # --- spawn ---------------------------------------------------------------

    async def spawn(
        self, principal: Principal, request: SpawnRequest, wait_seconds: float | None
    ) -> Sandbox:
        """A new sandbox: a matching pooled one when its template's pool has one ready, else
        one placed and booted for this request. One database session throughout."""
        return (await self.spawn_answer(principal, request, wait_seconds))[0]

    async def spawn_answer(self, principal: Principal, request: SpawnRequest,
                           wait_seconds: float | None) -> tuple[Sandbox, Template]:
        """``spawn``, with the template the answer shows (read in the spawn's own session)."""
        request = replace(request, ports=tuple(check_specs(request.ports, self.ctx.settings)))
        async with self.ctx.sessions() as session:
            # Another user's private template is as missing as one that does not exist.
            template = await visible_template(session, principal, request.template_id)
            _require_ready(template)
            ask = Ask.of(template, request, self.ctx.settings, self.ctx.clock())
            # The read ends here: each write transaction below must start with its lock.
            await session.commit()
            if pool_size(template, self.ctx.settings) > 0:
                claimed = await self._claim(session, principal, request, template, ask)
                if claimed is not None:
                    return claimed, template
            return await self._boot_cold(session, principal, request, template, ask, wait_seconds)

    async def _claim(self, session: AsyncSession, principal: Principal, request: SpawnRequest,
                     template: Template, ask: Ask) -> Sandbox | None:
        """Hand the principal a ready pooled sandbox that matches, or None. Its limits are
        lowered to the request's, its envs replaced, its deadline set on its host."""
        wanted = pools.Wanted(ask.resources, ask.internet)
        pooled = await pools.claim(session, template, wanted, ask.now, self.pools.max_age)
        if pooled is None:
            # Ends the claim's transaction (it changed nothing); a rollback would expire the
            # template the cold path reads next.
            await session.commit()
            return None
        # Quotas and the new row in the claim's transaction: refused, the pooled sandbox stays
        # (the session closes rolled back).
        fresh = await self._admit(session, principal, request.template_id)
        await self.quotas.check_spawn(session, principal, ask.resources)
        sandbox = claimed_row(
            id=pooled.id, owner_id=principal.user_id, template_id=fresh.id, host_id=pooled.host_id,
            vcpus=ask.resources.vcpus, memory_mb=ask.resources.memory_mb,
            disk_size_mb=ask.resources.disk_mb, allow_internet_access=ask.internet,
            runtime=fresh.runtime, labels=dict(request.labels), envs=dict(request.envs),
            timeout_seconds=ask.timeout, deadline_at=ask.deadline, created_at=ask.now,
            booted_at=ask.now)
        session.add(sandbox)
        await self._add_ports(session, sandbox, request, ask)
        events.record(session, sandbox.id, f"claimed from the warm pool of template {fresh.id} "
                      f"on host {pooled.host_id} ({ask.describe(fresh.runtime)})")
        await session.commit()
        self.pools.refill_soon()
        claim = SandboxClaim(envs={**sandbox_env(fresh), **request.envs,
                                   **system_envs(sandbox.id, fresh.id)}, vcpus=ask.resources.vcpus,
                             memory_mb=ask.resources.memory_mb, deadline_at=ask.deadline)
        try:
            await self.ctx.agents.for_host(pooled.host_id).sandboxes.claim(pooled.id, claim)
        except QboxError as exc:
            log.warning("claim of pooled sandbox %s failed: %s; booting one instead", pooled.id, exc.message)
            await self.lifecycle.end(pooled.id, Change.of(LifecycleEvent.CLAIM_FAILED, error=exc.message))
            return None
        return sandbox

    async def _add_ports(self, session: AsyncSession, sandbox: Sandbox, request: SpawnRequest, ask: Ask) -> None:
        """The spawn's ports, written with its row (flushed first: they refer to it)."""
        if request.ports:
            await session.flush()
            session.add_all(new_row(sandbox.id, spec, self.ctx.settings, ask.now) for spec in request.ports)

    async def _admit(self, session: AsyncSession, principal: Principal, template_id: str) -> Template:
        """In the new sandbox's transaction: the template again (a deletion that committed since
        the first read must not leave a live sandbox of a template that is gone), the user's
        lock and quotas."""
        fresh = await visible_template(session, principal, template_id, for_spawn=True)
        _require_ready(fresh)
        if not principal.is_admin:
            await lock_user(session, principal.user_id)
        return fresh

    async def _boot_cold(self, session: AsyncSession, principal: Principal, request: SpawnRequest,
                         template: Template, ask: Ask, wait_seconds: float | None) -> tuple[Sandbox, Template]:
        need = request_for(template, ask.resources)
        decision = await self.placement.decide(need, session=session)
        await session.commit()

        async def admit(session: AsyncSession, host_id: str) -> tuple[Sandbox, Template]:
            # Quotas and the new row in the host's locked transaction: refused, nothing is stored.
            fresh = await self._admit(session, principal, request.template_id)
            await self.quotas.check_spawn(session, principal, ask.resources)
            sandbox = booting_row(
                id=new_sandbox_id(), owner_id=principal.user_id, template_id=fresh.id,
                host_id=host_id, vcpus=ask.resources.vcpus, memory_mb=ask.resources.memory_mb,
                disk_size_mb=ask.resources.disk_mb, allow_internet_access=ask.internet,
                runtime=fresh.runtime, labels=dict(request.labels), envs=dict(request.envs),
                timeout_seconds=ask.timeout, deadline_at=ask.deadline, created_at=ask.now)
            session.add(sandbox)
            await self._add_ports(session, sandbox, request, ask)
            events.record(session, sandbox.id, f"spawn requested from template {fresh.id} "
                          f"on host {host_id} ({ask.describe(fresh.runtime)})")
            await session.commit()
            return sandbox, fresh

        sandbox, template = await self.placement.reserve(decision, need, admit, session=session)
        # Not validated here: the agent judges the spec (its refusal fails the boot, as
        # any agent error does). user/workdir/imagePullRef go only when the template
        # sets them, so agents without template builds accept the spec.
        spec = SandboxSpec.model_construct(
            id=sandbox.id, image_digest=template.image_digest,
            envs={**sandbox_env(template), **request.envs, **system_envs(sandbox.id, template.id)},
            vcpus=ask.resources.vcpus,
            memory_mb=ask.resources.memory_mb, disk_size_mb=ask.resources.disk_mb,
            allow_internet_access=ask.internet, runtime=template.runtime,
            user=template.default_user or None, workdir=template.workdir or None,
            image_pull_ref=template.registry_ref or None, deadline_at=ask.deadline,
            code_interpreter=template.code_interpreter or "lazy")
        task = self.boots.start(sandbox.id, sandbox.host_id or "", spec, StartPlan.of(template))
        if wait_seconds:
            await asyncio.wait({task}, timeout=wait_seconds)
        fresh = (await session.execute(select(Sandbox).where(Sandbox.id == sandbox.id)
                                       .execution_options(populate_existing=True))).scalar_one()
        await session.commit()
        return fresh, template

    async def relocate(self, sandbox_id: str, refused_by: str) -> str | None:
        """Move a booting sandbox whose host refused it to another host with room, once."""
        async with self.ctx.sessions() as session:
            sandbox = await session.get(Sandbox, sandbox_id)
        if sandbox is None or sandbox.status != SandboxState.BOOTING:
            return None
        async with self.ctx.sessions() as session:
            template = await session.get(Template, sandbox.template_id)
        if template is None:
            return None
        need = request_for(template, Resources(sandbox.vcpus, sandbox.memory_mb, sandbox.disk_size_mb or 0))
        decision = await self.placement.decide(need, exclude={refused_by})

        async def move(session: AsyncSession, host_id: str) -> str | None:
            moved = await session.execute(update(Sandbox).where(
                Sandbox.id == sandbox_id, Sandbox.host_id == refused_by,
                Sandbox.status == SandboxState.BOOTING.value).values(host_id=host_id))
            if not getattr(moved, "rowcount", 0):
                return None
            events.record(session, sandbox_id, f"host {refused_by} refused the sandbox; "
                          f"trying host {host_id}")
            await session.commit()
            return host_id

        try:
            return await self.placement.reserve(decision, need, move)
        except QboxError:
            return None

    # --- changes -------------------------------------------------------------

    async def set_timeout(self, principal: Principal, sandbox_id: str, seconds: int) -> Sandbox:
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            sandbox = await self._owned(session, principal, sandbox_id)
            if SandboxState(sandbox.status) not in LIVE_STATES:
                raise not_active(sandbox)
            sandbox.timeout_seconds = seconds
            sandbox.deadline_at = now + timedelta(seconds=seconds) if seconds else None
            events.record(session, sandbox.id,
                          f"timeout set to {seconds} s" if seconds else "auto-kill disabled")
            await session.commit()
        if sandbox.status == SandboxState.RUNNING and sandbox.host_id:
            # The host enforces the deadline too, while no control plane does; a host that does
            # not answer now learns it from its next heartbeat's answer.
            try:
                await self.ctx.agents.for_host(sandbox.host_id).sandboxes.set_deadline(
                    sandbox.id, sandbox.deadline_at)
            except QboxError as exc:
                log.warning("host %s not told the new deadline of %s: %s", sandbox.host_id,
                            sandbox.id, exc.message)
        return sandbox

    async def kill(self, principal: Principal, sandbox_id: str) -> Sandbox:
        async with self.ctx.sessions() as session:
            sandbox = await self._owned(session, principal, sandbox_id)
        if SandboxState(sandbox.status) not in LIVE_STATES:
            raise not_active(sandbox)
        await self.lifecycle.end(sandbox_id, Change.of(LifecycleEvent.KILL_REQUESTED,
                                                       api_key=principal.api_key_id))
        async with self.ctx.sessions() as session:
            fresh = await session.get(Sandbox, sandbox_id)
            assert fresh is not None
            return fresh

    async def _owned(self, session: AsyncSession, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await session.get(Sandbox, sandbox_id)
        # Another user's sandbox is indistinguishable from a missing one.
        if sandbox is None or (not principal.is_admin and sandbox.owner_id != principal.user_id):
            raise SandboxNotFoundError(f"sandbox {sandbox_id} not found",
                                       details={"sandboxId": sandbox_id})
        return sandbox

    async def shutdown(self) -> None:
        await self.boots.shutdown()


def not_active(sandbox: Sandbox) -> SandboxNotActiveError:
    return SandboxNotActiveError(
        f"sandbox {sandbox.id} is {sandbox.status}, not running",
        details={"sandboxId": sandbox.id, "currentState": sandbox.status},
    )


def _ssh_enabled(sandbox: Sandbox, template: Template | None) -> None:
    if template is None or not template.enable_ssh:
        raise SshDisabledError(f"template {sandbox.template_id} does not allow shells (enableSsh is false)",
                               details={"sandboxId": sandbox.id, "templateId": sandbox.template_id})
