"""Templates: built-in ones registered at start, ones built from user images, look-ups.

A template names an OCI image (``imageRef``, anything skopeo understands);
the host agent imports it into its content-addressed store. A user's
template may add build steps on top (template_builds.py runs the build);
its build log lives in the database, so any replica can serve and follow it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from qbox.core.errors import ConflictError, QboxError, TemplateNotFoundError
from qbox.core.ids import template_id_for
from qbox.core.states import TERMINAL_STATES, SandboxState
from qbox.server.db.tables import Sandbox, Template, TemplateBuildLog
from qbox.server.services.context import ServiceContext
from qbox.server.services.template_builds import (
    CODE_INTERPRETER,
    STALE_SECONDS,
    RegistryLogin,
    TemplateBuilds,
    services_for,
)

__all__ = ["CODE_INTERPRETER", "NewTemplate", "RegistryLogin", "TemplateService",
           "has_code_interpreter", "sandbox_env", "services_for"]

log = logging.getLogger("qbox.templates")

FOLLOW_POLL_SECONDS = 0.5
_LIVE_STATES = tuple(s.value for s in SandboxState if s not in TERMINAL_STATES)


@dataclass(frozen=True)
class NewTemplate:
    """A template to build, as the API validated it."""

    name: str
    image_ref: str
    default_vcpus: int = 1
    default_memory_mb: int = 512
    default_disk_mb: int = 2048
    ready_timeout_s: int = 30
    enable_ssh: bool = False
    allow_internet_access: bool = True
    runtime: str = "crun"
    tags: list[str] = field(default_factory=list)
    start_cmd: str | None = None
    ready_cmd: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    user: str = "user"
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def has_code_interpreter(template: Template | None) -> bool:
    return template is not None and any(s.get("type") == CODE_INTERPRETER
                                        for s in template.services)


def sandbox_env(template: Template) -> dict[str, str]:
    """What a template's sandboxes get: its env steps' variables in order, then its ``env``."""
    env: dict[str, str] = {}
    for step in template.steps:
        env.update(step.get("env") or {})
    env.update(template.envs)
    return env


class TemplateService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.builds = TemplateBuilds(ctx)

    async def find(self, service: str | None = None) -> list[Template]:
        async with self.ctx.sessions() as session:
            rows = list((await session.execute(select(Template).order_by(Template.name)))
                        .scalars().all())
        if service:
            rows = [t for t in rows if any(s.get("type") == service for s in t.services)]
        return rows

    async def get(self, template_id: str) -> Template:
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id)
        if template is None:
            raise _not_found(template_id)
        return template

    # --- building --------------------------------------------------------------

    async def create(self, spec: NewTemplate, login: RegistryLogin | None) -> Template:
        """Insert the template (``building``) and start its build in the background."""
        self.ctx.settings.check_caps(spec.default_vcpus, spec.default_memory_mb, spec.default_disk_mb,
                                     names=("defaultVcpus", "defaultMemoryMb", "defaultDiskMb"))
        template_id = template_id_for(spec.name)
        workdir = spec.workdir
        if workdir is None:
            # The last workdir step is where commands start, unless told otherwise.
            workdir = next((s["workdir"] for s in reversed(spec.steps) if "workdir" in s), None)
        now = self.ctx.clock()
        template = Template(
            id=template_id, name=spec.name, status="building", builtin=False,
            image_ref=spec.image_ref, default_vcpus=spec.default_vcpus,
            default_memory_mb=spec.default_memory_mb, default_disk_mb=spec.default_disk_mb,
            ready_timeout_s=spec.ready_timeout_s, enable_ssh=spec.enable_ssh,
            allow_internet_access=spec.allow_internet_access, runtime=spec.runtime,
            tags=list(spec.tags), start_cmd=spec.start_cmd, ready_cmd=spec.ready_cmd,
            steps=list(spec.steps), default_user=spec.user, workdir=workdir, envs=dict(spec.env),
            services=[], build_generation=1, build_started_at=now, created_at=now, updated_at=now,
        )
        try:
            async with self.ctx.sessions() as session:
                if await session.get(Template, template_id) is not None:
                    raise _exists(spec.name)
                session.add(template)
                await session.commit()
        except IntegrityError:
            raise _exists(spec.name) from None
        self.builds.start(template_id, 1, login)
        return template

    async def rebuild(self, template_id: str, login: RegistryLogin | None) -> Template:
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id)
            if template is None:
                raise _not_found(template_id)
            if template.builtin:
                raise ConflictError(f"template {template_id} is built in; it is not rebuilt",
                                    details={"templateId": template_id, "builtin": True})
            generation = template.build_generation + 1
            now = self.ctx.clock()
            changed = await session.execute(
                update(Template)
                .where(Template.id == template_id, Template.status != "building",
                       Template.build_generation == template.build_generation)
                .values(status="building", build_generation=generation, build_error=None,
                        build_started_at=now, build_finished_at=None, updated_at=now))
            if not getattr(changed, "rowcount", 0):
                raise _building(template_id)
            await session.execute(delete(TemplateBuildLog)
                                  .where(TemplateBuildLog.template_id == template_id))
            await session.commit()
        self.builds.start(template_id, generation, login)
        return await self.get(template_id)

    async def delete(self, template_id: str) -> None:
        """Remove a template no live sandbox uses; its ended sandboxes' records go with it."""
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id)
            if template is None:
                raise _not_found(template_id)
            if template.builtin:
                raise ConflictError(f"template {template_id} is built in; it cannot be deleted",
                                    details={"templateId": template_id, "builtin": True})
            await self._refuse_if_used(session, template_id)
        await self.builds.cancel(template_id)
        try:
            async with self.ctx.sessions() as session:
                await self._refuse_if_used(session, template_id)
                await session.execute(delete(TemplateBuildLog)
                                      .where(TemplateBuildLog.template_id == template_id))
                await session.execute(delete(Sandbox).where(Sandbox.template_id == template_id))
                await session.execute(delete(Template).where(Template.id == template_id))
                await session.commit()
        except IntegrityError:
            # A spawn raced the deletion.
            async with self.ctx.sessions() as session:
                await self._refuse_if_used(session, template_id)
            raise
        log.info("template %s deleted", template_id)
        self.builds.request_gc()

    async def _refuse_if_used(self, session: Any, template_id: str) -> None:
        count = int((await session.execute(
            select(func.count()).select_from(Sandbox)
            .where(Sandbox.template_id == template_id, Sandbox.status.in_(_LIVE_STATES))
        )).scalar_one())
        if count:
            raise ConflictError(
                f"template {template_id} is used by {count} live sandbox(es); end them first",
                details={"templateId": template_id, "sandboxCount": count})

    async def fail_interrupted_builds(self) -> int:
        """At start: builds a dead process left ``building`` can never finish, so they fail.

        With SQLite this process is the only one: every such build is dead. With
        several replicas only builds whose heartbeat stopped are; a sweeper keeps
        checking for those.
        """
        single = self.ctx.settings.resolved_database_url().startswith("sqlite")
        stale = None if single else self.ctx.clock() - timedelta(seconds=STALE_SECONDS)
        failed = await self.builds.fail_stale(stale)
        self.builds.start_sweeper()
        return failed

    async def shutdown(self) -> None:
        await self.builds.shutdown()

    # --- build log -------------------------------------------------------------

    async def build_log(self, template_id: str) -> str:
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id)
            if template is None:
                raise _not_found(template_id)
            text: list[str] = []
            after = 0
            # In pages: a log may hold far more lines than one read returns.
            while True:
                lines, after = await _lines(session, template_id, template.build_generation, after)
                if not lines:
                    break
                text += lines
        return "".join(line + "\n" for line in text)

    async def follow_build_log(self, template_id: str) -> AsyncIterator[str]:
        """The log so far, then new lines until the build ends (polls the database)."""
        template = await self.get(template_id)
        return self._follow(template_id, template.build_generation)

    async def _follow(self, template_id: str, generation: int) -> AsyncIterator[str]:
        after = 0
        while True:
            async with self.ctx.sessions() as session:
                status = (await session.execute(
                    select(Template.status, Template.build_generation)
                    .where(Template.id == template_id))).first()
                lines, after = await _lines(session, template_id, generation, after)
            if lines:
                yield "".join(line + "\n" for line in lines)
            if status is None or status[1] != generation or (status[0] != "building" and not lines):
                return
            if not lines:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)

    # --- built-in templates ----------------------------------------------------

    async def ensure_builtin(
        self,
        name: str,
        image_ref: str,
        host_id: str,
        *,
        runtime: str = "crun",
        on_progress: Callable[[str], None] = lambda _line: None,
    ) -> Template:
        """Register a built-in template and make sure the host has its image (idempotent)."""
        template_id = template_id_for(name)
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id)
            if template is None:
                template = Template(id=template_id, name=name, builtin=True, status="building",
                                    created_at=now, updated_at=now)
                session.add(template)
            template.image_ref = image_ref
            template.runtime = runtime
            # The built-in images have a login shell and a sandbox user.
            template.enable_ssh = True
            await session.commit()
        on_progress(f"template {template_id}: importing {image_ref}")
        try:
            image = await self.ctx.agents.for_host(host_id).import_image(image_ref, name)
        except QboxError as exc:
            await self._set(template_id, status="failed", build_error=exc.message)
            raise
        on_progress(f"template {template_id}: ready ({image['digest'][:19]}, "
                    f"{int(image.get('sizeBytes', 0)) // (1024 * 1024)} MiB)")
        return await self._set(template_id, status="ready", build_error=None,
                               image_digest=image["digest"],
                               size_bytes=int(image.get("sizeBytes", 0)),
                               services=services_for(image.get("kernels") or []))

    async def _set(self, template_id: str, **values: object) -> Template:
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id)
            assert template is not None
            for key, value in values.items():
                setattr(template, key, value)
            template.updated_at = self.ctx.clock()
            await session.commit()
            return template


async def _lines(session: Any, template_id: str, generation: int,
                 after: int) -> tuple[list[str], int]:
    """Up to 5000 lines of a build's log after row ``after``, and the last row read."""
    rows = (await session.execute(
        select(TemplateBuildLog.id, TemplateBuildLog.line)
        .where(TemplateBuildLog.template_id == template_id,
               TemplateBuildLog.generation == generation, TemplateBuildLog.id > after)
        .order_by(TemplateBuildLog.id).limit(5000))).all()
    return [row[1] for row in rows], (rows[-1][0] if rows else after)


def _not_found(template_id: str) -> TemplateNotFoundError:
    return TemplateNotFoundError(f"template {template_id} not found",
                                 details={"templateId": template_id})


def _exists(name: str) -> ConflictError:
    return ConflictError(f"a template named {name!r} already exists",
                         details={"templateId": template_id_for(name)})


def _building(template_id: str) -> ConflictError:
    return ConflictError(f"template {template_id} is being built; wait for it to end",
                         details={"templateId": template_id, "status": "building"})
