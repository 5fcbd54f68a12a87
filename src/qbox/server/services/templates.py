"""Templates: the built-in ones registered at start, and look-ups.

A template names an OCI image (``imageRef``, anything skopeo understands);
the host agent imports it into its content-addressed store and unpacks it
once. Building templates from user images comes with POST /v1/templates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from qbox.core.errors import QboxError, TemplateNotFoundError
from qbox.core.ids import template_id_for
from qbox.server.db.tables import Template
from qbox.server.services.context import ServiceContext

log = logging.getLogger("qbox.templates")


CODE_INTERPRETER = "code-interpreter"


def services_for(kernels: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The services a template offers, from what its image holds (its Jupyter kernels)."""
    if not kernels:
        return []
    languages = sorted({str(k.get("language", "")) for k in kernels} - {""})
    return [{"name": CODE_INTERPRETER, "type": CODE_INTERPRETER,
             "version": "jupyter:" + ",".join(languages)}]


def has_code_interpreter(template: Template | None) -> bool:
    return template is not None and any(s.get("type") == CODE_INTERPRETER
                                        for s in template.services)


class TemplateService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

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
            raise TemplateNotFoundError(f"template {template_id} not found",
                                        details={"templateId": template_id})
        return template

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
