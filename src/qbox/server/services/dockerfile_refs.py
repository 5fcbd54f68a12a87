"""Where a template's image comes from: the images it builds from, checked against the pull
policy for its creator (its ``imageRef``, or every image its Dockerfile names:
core/dockerfile.py), and the source columns of an image template."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from qbox.core.dockerfile import images_of
from qbox.core.errors import QboxError, ValidationError
from qbox.core.image_refs import parse_ref
from qbox.server.db.tables import Template
from qbox.server.principal import Principal
from qbox.server.services.template_builds import DOCKERFILE_SOURCES

RefCheck = Callable[[Principal, str], Awaitable[None]]
# A template row's source columns for an image template; a Dockerfile or git one sets its own
# over these (a deleted template's row is reused for its name).
IMAGE_SOURCE: dict[str, Any] = dict(
    source="image", dockerfile=None, build_args={}, build_context_id=None, git_url=None, git_ref=None,
    resolved_commit_sha=None, dockerfile_path=None, context_path=None, build_key=None,
    built_from_template_id=None)


async def check_dockerfile_refs(check_ref: RefCheck, principal: Principal, dockerfile: str,
                                build_args: dict[str, str]) -> None:
    """Each image the Dockerfile builds from, as ``check_ref`` checks an imageRef (400 naming
    the image); registry images only: a local path is no Dockerfile's base."""
    for image in images_of(dockerfile, build_args).images:
        try:
            if parse_ref(image).is_local:
                raise ValidationError("a Dockerfile builds from registry images only")
            await check_ref(principal, image)
        except QboxError as exc:
            raise ValidationError(f"FROM {image}: {exc.message}",
                                  details={"field": "dockerfile", "image": image}) from None


async def check_template_refs(check_ref: RefCheck, principal: Principal, template: Template) -> None:
    """What a rebuild of ``template`` would pull."""
    if template.source in DOCKERFILE_SOURCES:
        await check_dockerfile_refs(check_ref, principal, template.dockerfile or "",
                                    dict(template.build_args))
    else:
        await check_ref(principal, template.image_ref)
