"""Templates built from a Dockerfile (and, through services/git_sources.py, from git).

The Dockerfile and its build context (a tar, a ``BuildContext`` row its
uploader owns) are stored with the template, so a rebuild builds the same
inputs again. Every image its FROM lines (and ``COPY --from=``) name is checked
against the pull policy for the caller before anything is stored, as an
``imageRef`` is. The build runs on a host agent with buildah
(agent/images/dockerfile_build.py) and its image then takes the path every
template's image takes (the store, the registry, the template ``ready``).
A dockerfile template's ``imageRef`` is "" (its images are in its Dockerfile).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import delete, select

from qbox.core.build_context import check_context
from qbox.core.errors import ConflictError, NotFoundError, ValidationError
from qbox.server.db.tables import BuildContext, Template
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.dockerfile_refs import check_dockerfile_refs
from qbox.server.services.template_access import DELETED
from qbox.server.services.template_builds import RegistryLogin
from qbox.server.services.templates import NewTemplate, TemplateService

__all__ = ["DockerfileTemplateSpec", "DockerfileTemplates", "new_context_id"]

MAX_BUILD_ARGS = 256
# An uploaded context no template names is removed by its owner's next upload after this.
UNUSED_CONTEXT_TTL = timedelta(hours=24)
_SOURCES = ("dockerfile", "git")


@dataclass(frozen=True)
class DockerfileTemplateSpec:
    name: str
    dockerfile: str                 # the Dockerfile's text
    context: bytes                  # a tar (plain or gzip) of the build context
    build_args: dict[str, str]
    default_vcpus: int = 1
    default_memory_mb: int = 512
    default_disk_mb: int = 2048
    ready_timeout_s: int = 30
    enable_ssh: bool = False
    allow_internet_access: bool = True
    tags: tuple[str, ...] = ()
    start_cmd: str | None = None
    ready_cmd: str | None = None
    source: str = "dockerfile"      # or "git"
    git_url: str | None = None
    git_ref: str | None = None
    resolved_commit_sha: str | None = None
    dockerfile_path: str | None = None
    context_path: str | None = None
    build_key: str | None = None


def new_context_id() -> str:
    return "bctx_" + secrets.token_hex(12)


class DockerfileTemplates:
    def __init__(self, ctx: ServiceContext, templates: TemplateService) -> None:
        self.ctx = ctx
        self.templates = templates

    # --- checks ----------------------------------------------------------------

    async def check_dockerfile(self, principal: Principal, dockerfile: str,
                               build_args: dict[str, str]) -> None:
        """400 unless the Dockerfile parses and ``principal`` may pull every image it names
        (registry images only: a local path is no Dockerfile's base)."""
        if len(build_args) > MAX_BUILD_ARGS or any(
                not key or "=" in key or "\0" in key + value for key, value in build_args.items()):
            raise ValidationError(f"buildArgs: at most {MAX_BUILD_ARGS} NAME=value pairs, names "
                                  "without '='", details={"field": "buildArgs"})
        await check_dockerfile_refs(self.templates.check_ref, principal, dockerfile, build_args)

    async def check_context(self, data: bytes) -> tuple[str, int]:
        """The context's sha256 and size; 400 when it is too big or no usable tar."""
        limit = self.ctx.settings.max_build_context_bytes
        if len(data) > limit:
            raise ValidationError(f"build context: over {limit} bytes", details={"field": "buildContext"})
        await asyncio.to_thread(check_context, data)
        return hashlib.sha256(data).hexdigest(), len(data)

    # --- contexts ----------------------------------------------------------------

    async def store_context(self, principal: Principal, data: bytes) -> BuildContext:
        """A checked context, stored for ``principal`` (POST /v1/build-contexts). The same
        user's contexts older than UNUSED_CONTEXT_TTL that no template uses go meanwhile."""
        sha256, size = await self.check_context(data)
        now = self.ctx.clock()
        row = BuildContext(id=new_context_id(), owner_id=principal.user_id, sha256=sha256,
                           size_bytes=size, data=data, created_at=now)
        used = select(Template.build_context_id).where(Template.build_context_id.is_not(None),
                                                       Template.status != DELETED)
        async with self.ctx.sessions() as session:
            await session.execute(delete(BuildContext).where(
                BuildContext.owner_id == principal.user_id,
                BuildContext.created_at < now - UNUSED_CONTEXT_TTL, BuildContext.id.not_in(used)))
            session.add(row)
            await session.commit()
        return row

    async def owned_context(self, principal: Principal, context_id: str) -> BuildContext:
        """The uploader's own context; anyone else's (or none) is a 404 that says no more."""
        async with self.ctx.sessions() as session:
            row = await session.get(BuildContext, context_id)
        if row is None or row.owner_id != principal.user_id:
            raise NotFoundError(f"build context {context_id} not found",
                                details={"buildContextId": context_id})
        return row

    # --- templates -------------------------------------------------------------------

    async def create(self, principal: Principal, spec: DockerfileTemplateSpec, *,
                     login: RegistryLogin | None = None, build_context_id: str | None = None,
                     options: NewTemplate | None = None) -> Template:
        """Validate (a name in use: 409; caps, the Dockerfile, the context: 400), store the
        context as a BuildContext row, write the template (``building``) and start its build.

        ``build_context_id``: an uploaded context of ``principal`` instead of ``spec.context``.
        ``options``: the rest of a template's settings (public, host selector, warm pool…).
        """
        new = self._new_template(spec, options)
        self._check_template(principal, new)
        await self.check_dockerfile(principal, spec.dockerfile, spec.build_args)
        if build_context_id is not None:
            context_id: str | None = (await self.owned_context(principal, build_context_id)).id
        elif spec.context.strip(b"\0"):
            context_id = (await self.store_context(principal, spec.context)).id
        else:
            context_id = None
        template = await self._insert(principal, new, spec, "building", context_id)
        self.templates.builds.start(template.id, template.build_generation, login)
        return template

    async def copy_ready(self, principal: Principal, spec: DockerfileTemplateSpec,
                         source: Template) -> Template:
        """A new ``ready`` template reusing ``source``'s built image (a cache hit): no build,
        ``built_from_template_id = source.id``."""
        if source.status != "ready" or not source.image_digest:
            raise ConflictError(f"template {source.id} is not ready; its image cannot be reused",
                                details={"templateId": source.id})
        new = self._new_template(spec, None)
        self._check_template(principal, new)
        context_id = source.build_context_id
        if context_id is None and spec.context.strip(b"\0"):
            context_id = (await self.store_context(principal, spec.context)).id
        image = dict(image_digest=source.image_digest, base_digest=source.base_digest,
                     registry_ref=source.registry_ref, size_bytes=source.size_bytes,
                     services=list(source.services), default_user=source.default_user,
                     workdir=source.workdir, build_finished_at=self.ctx.clock(),
                     built_from_template_id=source.id)
        return await self._insert(principal, new, spec, "ready", context_id, image)

    def _new_template(self, spec: DockerfileTemplateSpec, options: NewTemplate | None) -> NewTemplate:
        if spec.source not in _SOURCES:
            raise ValidationError(f"source must be one of {', '.join(_SOURCES)}")
        base = options or NewTemplate(name=spec.name, image_ref="")
        return replace(base, name=spec.name, image_ref="", default_vcpus=spec.default_vcpus,
                       default_memory_mb=spec.default_memory_mb, default_disk_mb=spec.default_disk_mb,
                       ready_timeout_s=spec.ready_timeout_s, enable_ssh=spec.enable_ssh,
                       allow_internet_access=spec.allow_internet_access, tags=list(spec.tags),
                       start_cmd=spec.start_cmd, ready_cmd=spec.ready_cmd, steps=[],
                       user="root", workdir=None)

    def _check_template(self, principal: Principal, new: NewTemplate) -> None:
        self.ctx.settings.check_caps(new.default_vcpus, new.default_memory_mb, new.default_disk_mb,
                                     names=("defaultVcpus", "defaultMemoryMb", "defaultDiskMb"))
        self.templates.check_options(principal, new)

    async def _insert(self, principal: Principal, new: NewTemplate, spec: DockerfileTemplateSpec,
                      status: str, context_id: str | None,
                      image: dict[str, object] | None = None) -> Template:
        values: dict[str, object] = dict(
            status=status, source=spec.source, dockerfile=spec.dockerfile,
            build_args=dict(spec.build_args), build_context_id=context_id,
            git_url=spec.git_url, git_ref=spec.git_ref,
            resolved_commit_sha=spec.resolved_commit_sha,
            dockerfile_path=spec.dockerfile_path, context_path=spec.context_path,
            build_key=spec.build_key, built_from_template_id=None)
        values.update(image or {})
        return await self.templates.insert(principal, new, **values)
