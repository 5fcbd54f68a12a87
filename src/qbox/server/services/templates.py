"""Templates: built-in ones registered at start, ones built from user images, look-ups.

A template names an OCI image (``imageRef``, checked against the pull policy
in core/image_refs.py before anything is stored); the host agent imports it
into its content-addressed store. A user's template may add build steps on
top (template_builds.py runs the build); its build log lives in the database,
so any replica can serve and follow it. Who may see and change a template is
decided in template_access.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from qbox.core.errors import ConflictError, PermissionDeniedError, QboxError, ValidationError
from qbox.core.ids import template_id_for
from qbox.core.image_refs import ImageRefPolicy
from qbox.core.states import LIVE_STATES
from qbox.server.db.tables import Sandbox, Template, TemplateBuildLog
from qbox.server.services.context import ServiceContext
from qbox.server.services.dockerfile_refs import IMAGE_SOURCE, check_template_refs
from qbox.server.services.hosts import hold_image
from qbox.server.services.lifecycle import values_of
from qbox.server.principal import Principal
from qbox.server.services.template_access import (
    DELETED,
    changeable_template,
    tombstone_values,
    visible_template,
    visible_to,
)
from qbox.server.settings import ServerSettings
from qbox.server.services.template_builds import (
    CODE_INTERPRETER,
    STALE_SECONDS,
    RegistryLogin,
    TemplateBuilds,
    services_for,
)

__all__ = ["CODE_INTERPRETER", "NewTemplate", "RegistryLogin", "TemplateChange", "TemplateService",
           "sandbox_env", "services_for"]

log = logging.getLogger("qbox.templates")

# A fleet's built-in template whose build failed is tried again (from a host's report) after this.
BUILTIN_RETRY = timedelta(minutes=5)

FOLLOW_POLL_SECONDS = 0.5


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
    # Seen and spawned by every user (admins only may set it).
    public: bool = False
    # Labels a host must carry to run its sandboxes.
    host_selector: dict[str, str] = field(default_factory=dict)
    code_interpreter: str = "lazy"
    # None: the default (services/pools.py); above 0 only an admin may ask.
    warm_pool_size: int | None = None
    warm_pool_eager: bool = True


@dataclass(frozen=True)
class TemplateChange:
    """A PATCH, as the API validated it; None leaves a field as it is."""

    public: bool | None = None
    host_selector: Mapping[str, str] | None = None
    code_interpreter: str | None = None
    warm_pool_size: int | None = None
    warm_pool_eager: bool | None = None

    @property
    def owners(self) -> bool:
        """Whether it changes what the template's owner (or an admin) decides."""
        return any(value is not None for value in (self.host_selector, self.code_interpreter,
                                                   self.warm_pool_size, self.warm_pool_eager))


def sandbox_env(template: Template) -> dict[str, str]:
    """What a template's sandboxes get: its env steps' variables in order, then its ``env``."""
    env: dict[str, str] = {}
    for step in template.steps:
        env.update(step.get("env") or {})
    env.update(template.envs)
    return env


class Pools(Protocol):
    """What templates ask of the warm pools (services/pools.py, which needs this module)."""

    async def drain(self, template_id: str) -> int: ...

    def refill_soon(self) -> None: ...


def check_pool_size(principal: Principal, size: int | None, settings: ServerSettings) -> None:
    """A pool holds host capacity every user shares: only an admin gives a template one."""
    if size is None:
        return
    if not 0 <= size <= settings.warm_pool_max_size:
        raise ValidationError.for_fields(
            {"warmPool.size": f"must be between 0 and {settings.warm_pool_max_size}"})
    if size > 0 and not principal.is_admin:
        raise PermissionDeniedError("only an admin may give a template a warm pool "
                                    "(it holds host capacity every user shares)",
                                    details={"field": "warmPool.size"})


class TemplateService:
    def __init__(self, ctx: ServiceContext, pools: Pools) -> None:
        self.ctx = ctx
        self.pools = pools
        self.builds = TemplateBuilds(ctx)
        # Fleet built-ins seen ready by this replica: heartbeats ask no more about them.
        self._fleet_ready: set[str] = set()
        settings = ctx.settings
        self.ref_policy = ImageRefPolicy.from_settings(
            settings.trusted_registries, settings.import_dirs, registry=settings.registry)

    async def find(self, principal: Principal, service: str | None = None) -> list[Template]:
        async with self.ctx.sessions() as session:
            rows = list((await session.execute(
                select(Template).where(visible_to(principal)).order_by(Template.name))).scalars().all())
        if service:
            rows = [t for t in rows if any(s.get("type") == service for s in t.services)]
        return rows

    async def by_id(self, template_ids: set[str]) -> dict[str, Template]:
        """The templates of sandboxes the caller may see (whoever may see the templates)."""
        if not template_ids:
            return {}
        async with self.ctx.sessions() as session:
            rows = (await session.execute(
                select(Template).where(Template.id.in_(sorted(template_ids))))).scalars().all()
        return {t.id: t for t in rows}

    async def get(self, principal: Principal, template_id: str) -> Template:
        async with self.ctx.sessions() as session:
            return await visible_template(session, principal, template_id)

    async def check_ref(self, principal: Principal, image_ref: str) -> None:
        """400 (403 for a member's local path) unless ``principal`` may build from ``image_ref``."""
        # Off the event loop: a registry's name is looked up.
        await asyncio.to_thread(self.ref_policy.check, image_ref, local_allowed=principal.is_admin)

    # --- building --------------------------------------------------------------

    async def create(self, principal: Principal, spec: NewTemplate,
                     login: RegistryLogin | None) -> Template:
        """Insert the template (``building``, owned by ``principal``) and start its build."""
        self.ctx.settings.check_caps(spec.default_vcpus, spec.default_memory_mb, spec.default_disk_mb,
                                     names=("defaultVcpus", "defaultMemoryMb", "defaultDiskMb"))
        self.check_options(principal, spec)
        await self.check_ref(principal, spec.image_ref)
        template = await self.insert(principal, spec)
        self.builds.start(template.id, template.build_generation, login)
        return template

    async def insert(self, principal: Principal, spec: NewTemplate, **columns: object) -> Template:
        """A new template's row (``spec`` and ``columns``), committed. Names are global (``tpl_<name>``):
        one in use is a 409; a deleted template's row (kept for its sandboxes' history) is reused."""
        template_id = template_id_for(spec.name)
        try:
            async with self.ctx.sessions() as session:
                template = await session.get(Template, template_id)
                if template is not None and template.status != DELETED:
                    raise _exists(spec.name)
                if template is None:
                    template = Template(id=template_id, name=spec.name, build_generation=0)
                    session.add(template)
                self.fill(template, principal, spec)
                for key, value in columns.items():
                    setattr(template, key, value)
                await session.commit()
        except IntegrityError:
            raise _exists(spec.name) from None
        return template

    def check_options(self, principal: Principal, spec: NewTemplate) -> None:
        """What only an admin may ask: a public template, a warm pool."""
        if spec.public and not principal.is_admin:
            raise PermissionDeniedError("only an admin may make a template public",
                                        details={"field": "public"})
        check_pool_size(principal, spec.warm_pool_size, self.ctx.settings)

    def fill(self, template: Template, principal: Principal, spec: NewTemplate) -> None:
        workdir = spec.workdir
        if workdir is None:
            # The last workdir step is where commands start, unless told otherwise.
            workdir = next((s["workdir"] for s in reversed(spec.steps) if "workdir" in s), None)
        now = self.ctx.clock()
        values: dict[str, Any] = dict(
            status="building", builtin=False, owner_id=principal.user_id, public=spec.public,
            image_ref=spec.image_ref, image_digest="", base_digest="", registry_ref="", size_bytes=0,
            build_error=None, default_vcpus=spec.default_vcpus,
            default_memory_mb=spec.default_memory_mb, default_disk_mb=spec.default_disk_mb,
            ready_timeout_s=spec.ready_timeout_s, enable_ssh=spec.enable_ssh,
            allow_internet_access=spec.allow_internet_access, runtime=spec.runtime,
            tags=list(spec.tags), start_cmd=spec.start_cmd, ready_cmd=spec.ready_cmd,
            steps=list(spec.steps), default_user=spec.user, workdir=workdir, envs=dict(spec.env),
            host_selector=dict(spec.host_selector), services=[],
            code_interpreter=spec.code_interpreter, warm_pool_size=spec.warm_pool_size,
            warm_pool_eager=spec.warm_pool_eager, **IMAGE_SOURCE,
            build_generation=(template.build_generation or 0) + 1, build_started_at=now,
            build_finished_at=None, created_at=now, updated_at=now)
        for key, value in values.items():
            setattr(template, key, value)

    async def update(self, principal: Principal, template_id: str, change: TemplateChange) -> Template:
        """PATCH: ``public`` (admins only: every user may see and spawn a public template);
        ``host_selector`` (replaced whole), ``code_interpreter`` and the warm pool's settings
        (its owner or an admin; a pool size above 0, an admin only)."""
        check_pool_size(principal, change.warm_pool_size, self.ctx.settings)
        async with self.ctx.sessions() as session:
            if change.owners:
                template = await changeable_template(session, principal, template_id, "change")
            else:
                template = await visible_template(session, principal, template_id)
            if change.host_selector is not None:
                template.host_selector = dict(change.host_selector)
            if change.code_interpreter is not None:
                template.code_interpreter = change.code_interpreter
            if change.warm_pool_size is not None:
                template.warm_pool_size = change.warm_pool_size
            if change.warm_pool_eager is not None:
                template.warm_pool_eager = change.warm_pool_eager
            if change.public is not None:
                if not principal.is_admin:
                    raise PermissionDeniedError("only an admin may change who sees a template",
                                                details={"templateId": template_id})
                if template.builtin and not change.public:
                    raise ConflictError(f"template {template_id} is built in; built-ins are public",
                                        details={"templateId": template_id, "builtin": True})
                template.public = change.public
            template.updated_at = self.ctx.clock()
            await session.commit()
        if change.warm_pool_size is not None:
            self.pools.refill_soon()
        return template

    async def rebuild(self, principal: Principal, template_id: str,
                      login: RegistryLogin | None) -> Template:
        async with self.ctx.sessions() as session:
            template = await changeable_template(session, principal, template_id, "rebuild")
            if template.builtin:
                raise ConflictError(f"template {template_id} is built in; it is not rebuilt",
                                    details={"templateId": template_id, "builtin": True})
            # Checked again: the policy may have changed, or an admin's ref is rebuilt by its owner.
            await check_template_refs(self.check_ref, principal, template)
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
            # As the build starts (read after it, a quick build could already be over).
            await session.refresh(template)
        self.builds.start(template_id, generation, login)
        return template

    async def delete(self, principal: Principal, template_id: str) -> None:
        """Remove a template no live sandbox uses. Ended sandboxes (anyone's) keep their
        records: a template they name stays as a ``deleted`` row nobody sees."""
        async with self.ctx.sessions() as session:
            template = await changeable_template(session, principal, template_id, "delete")
            if template.builtin:
                raise ConflictError(f"template {template_id} is built in; it cannot be deleted",
                                    details={"templateId": template_id, "builtin": True})
            await self._refuse_if_used(session, template_id)
        await self.builds.cancel(template_id)
        # Its pooled sandboxes first: each off its host, then its row.
        await self.pools.drain(template_id)
        try:
            async with self.ctx.sessions() as session:
                await self._refuse_if_used(session, template_id)
                await session.execute(delete(TemplateBuildLog)
                                      .where(TemplateBuildLog.template_id == template_id))
                history = int((await session.execute(
                    select(func.count()).select_from(Sandbox)
                    .where(Sandbox.template_id == template_id))).scalar_one())
                if history:
                    await session.execute(update(Template).where(Template.id == template_id)
                                          .values(**tombstone_values(), updated_at=self.ctx.clock()))
                else:
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
            .where(Sandbox.template_id == template_id, Sandbox.status.in_(values_of(LIVE_STATES)))
        )).scalar_one())
        if count:
            raise ConflictError(
                f"template {template_id} is used by {count} live sandbox(es); end them first",
                details={"templateId": template_id, "sandboxCount": count})

    async def fail_interrupted_builds(self) -> int:
        """At start: builds a dead process left ``building`` can never finish, so they fail.

        With SQLite this process is the only one: every such build is dead. With
        several replicas only builds whose lease ran out are; a periodic sweep
        (``TemplateBuilds.expire_stale``) keeps checking for those.
        """
        single = self.ctx.settings.resolved_database_url().startswith("sqlite")
        stale = None if single else self.ctx.clock() - timedelta(seconds=STALE_SECONDS)
        return await self.builds.fail_stale(stale)

    async def shutdown(self) -> None:
        await self.builds.shutdown()

    # --- build log -------------------------------------------------------------

    async def build_log(self, principal: Principal, template_id: str) -> str:
        async with self.ctx.sessions() as session:
            template = await visible_template(session, principal, template_id)
            text: list[str] = []
            after = 0
            # In pages: a log may hold far more lines than one read returns.
            while True:
                lines, after = await _lines(session, template_id, template.build_generation, after)
                if not lines:
                    break
                text += lines
        return "".join(line + "\n" for line in text)

    async def follow_build_log(self, principal: Principal, template_id: str) -> AsyncIterator[str]:
        """The log so far, then new lines until the build ends (polls the database)."""
        template = await self.get(principal, template_id)
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
                # Kernels start on first use (code_interpreter "lazy"), and the pool's size is
                # QBOX_WARM_POOL_DEFAULT's (warm_pool_size None), until an admin says otherwise.
                template = Template(id=template_id, name=name, builtin=True, status="building",
                                    code_interpreter="lazy", created_at=now, updated_at=now)
                session.add(template)
            template.builtin = True
            template.public = True
            template.owner_id = None
            template.image_ref = image_ref
            template.runtime = runtime
            # The built-in images have a login shell and a sandbox user.
            template.enable_ssh = True
            await session.commit()
        on_progress(f"template {template_id}: importing {image_ref}")
        try:
            image = await self.ctx.agents.for_host(host_id).images.import_image(image_ref, name)
        except QboxError as exc:
            await self._set(template_id, status="failed", build_error=exc.message)
            raise
        await hold_image(self.ctx, host_id, image.digest)
        on_progress(f"template {template_id}: ready ({image.digest[:19]}, "
                    f"{image.size_bytes // (1024 * 1024)} MiB)")
        return await self._set(template_id, status="ready", build_error=None,
                               image_digest=image.digest, size_bytes=image.size_bytes,
                               services=services_for(image.kernels))

    async def ensure_fleet_builtin(self, name: str, image_ref: str, host_id: str, *,
                                   runtime: str = "crun") -> None:
        """A built-in template on a fleet with no embedded agent: built (no steps) on the first
        host that offers its machine's base image, and pushed to ``QBOX_REGISTRY`` from there
        so every host can pull it. Nothing when it is ready or building (on any replica)."""
        template_id = template_id_for(name)
        if template_id in self._fleet_ready:
            return
        now = self.ctx.clock()
        try:
            async with self.ctx.sessions() as session:
                template = await session.get(Template, template_id)
                if template is not None and template.status == "ready":
                    self._fleet_ready.add(template_id)
                    return
                if template is not None and (template.status == "building" or (
                        template.build_finished_at is not None
                        and now - template.build_finished_at < BUILTIN_RETRY)):
                    return
                if template is None:
                    template = Template(id=template_id, name=name, build_generation=0, created_at=now)
                    session.add(template)
                generation = (template.build_generation or 0) + 1
                for key, value in dict(
                        status="building", builtin=True, public=True, owner_id=None, image_ref=image_ref,
                        image_digest="", registry_ref="", build_error=None, runtime=runtime,
                        enable_ssh=True, steps=[], build_generation=generation, build_started_at=now,

                        build_finished_at=None, updated_at=now).items():
                    setattr(template, key, value)
                await session.commit()
        except IntegrityError:
            return  # another replica inserted it first and builds it
        log.info("template %s: building from host %s's base image %s", template_id, host_id, image_ref)
        self.builds.start(template_id, generation, None, host_id=host_id)

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


def _exists(name: str) -> ConflictError:
    # Whose it is and what it holds stay unsaid: the name may be another user's.
    return ConflictError(f"the template name {name!r} is taken; choose another",
                         details={"name": name})


def _building(template_id: str) -> ConflictError:
    return ConflictError(f"template {template_id} is being built; wait for it to end",
                         details={"templateId": template_id, "status": "building"})
