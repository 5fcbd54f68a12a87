"""What a sandbox needs of the image store: its layers (pulled first when the host lacks
them) and the environment its image config sets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from qbox.agent.sandbox import SandboxParams
from qbox.core.errors import NotFoundError, QboxError, TemplateNotReadyError

log = logging.getLogger("qbox.agent.sandboxes")


class ImageSource(Protocol):
    """The part of the image store (``qbox.agent.images.ImageStore``) a sandbox needs."""

    def lower_dirs(self, digest: str) -> list[Path]:
        """The image's read-only dirs, top first; NotFoundError when it is not in the store."""
        ...

    def config(self, digest: str) -> ImageConfigLike: ...

    async def import_image(self, ref: str, name: str) -> ImageInfoLike: ...


class ImageInfoLike(Protocol):
    @property
    def digest(self) -> str: ...

    @property
    def size_bytes(self) -> int: ...


class ImageConfigLike(Protocol):
    @property
    def env(self) -> tuple[str, ...]: ...


def pull_name(digest: str) -> str:
    """The store tag of an image pulled for a sandbox (a name per digest: pulls never clash)."""
    return "pull-" + digest.partition(":")[2][:12]


def image_config_env(images: ImageSource, digest: str) -> dict[str, str]:
    try:
        pairs = images.config(digest).env
    except Exception:  # noqa: BLE001 - an unreadable image config just means no extra env
        log.warning("cannot read the image config of %s", digest, exc_info=True)
        return {}
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if sep and key:
            env[key] = value
    return env


async def image_layers(images: ImageSource, params: SandboxParams) -> list[Path]:
    """The image's layers, pulled first from ``image_pull_ref`` when the store lacks it."""
    not_ready = TemplateNotReadyError(f"image {params.image_digest} is not in this host's store",
                                      details={"imageDigest": params.image_digest})
    try:
        return images.lower_dirs(params.image_digest)
    except NotFoundError:
        if params.image_pull_ref is None:
            raise not_ready from None
    log.info("pulling %s for %s", params.image_pull_ref, params.id)
    try:
        await images.import_image(params.image_pull_ref, pull_name(params.image_digest))
    except QboxError as exc:
        raise TemplateNotReadyError(
            f"image {params.image_digest} is not in this host's store and pulling "
            f"{params.image_pull_ref} failed: {exc.message}",
            details={"imageDigest": params.image_digest}) from exc
    try:
        return images.lower_dirs(params.image_digest)
    except NotFoundError:
        # The ref now names another image (a moved tag).
        raise not_ready from None
