"""The agent's content-addressed image store: one OCI layout plus unpacked rootfs trees.

Layout under ``root``::

    oci/                    one OCI image layout; every template is a tag in it,
                            so blobs are shared between images and stored once
    rootfs/<digest-hex>/    the bundle ``umoci unpack`` made for that manifest;
                            the sandbox's lower dir is its ``rootfs/`` subdir
    tmp/                    unpacks in flight (anything here is left over from
                            a crash when the store lock is free)
    .lock                   flock held by whoever writes to any of the above

An unpacked rootfs is shared by every sandbox of its image and is only ever
mounted as a read-only overlayfs lower dir: nothing in qbox writes into it
after the atomic rename that publishes it. Sandbox changes go to the
sandbox's own upper dir. (The ``config.json`` umoci writes next to it is not
used; the sandbox layer writes its own.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbox.agent.images.lock import file_lock
from qbox.agent.images.refs import digest_hex, local_path, validate_name, validate_ref
from qbox.agent.images.runner import CommandResult, CommandRunner, SubprocessRunner
from qbox.core.errors import InternalError, NotFoundError, QboxError, ValidationError

ProgressCallback = Callable[[str], None]

_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
_REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# skopeo exits 1 for every failure; these prefixes of its message are the
# ones that mean "this source cannot be read" (unknown transport, missing
# path, unknown tag, registry refusal) rather than a fault of this host.
_SOURCE_FAILURE_MARKERS = ("initializing source", "Invalid source name")
_LOGRUS_MSG_RE = re.compile(r'level=\w+ msg="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ImageInfo:
    digest: str  # the manifest digest, "sha256:<hex>"
    # Bytes of the image's stored blobs (config + layers, as compressed in
    # the store), i.e. what pulling it costs, not its unpacked size.
    size_bytes: int


@dataclass(frozen=True)
class ImageConfig:
    """The parts of the image's config a sandbox needs to run like the image intends."""

    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


class ImageStore:
    def __init__(self, root: Path, *, runner: CommandRunner | None = None) -> None:
        # skopeo and umoci split "path:tag" at a colon, so the path must not hold one.
        if ":" in str(root):
            raise ValueError(f"image store path {root} must not contain ':'")
        self.root = Path(root)
        self._runner: CommandRunner = runner or SubprocessRunner()

    @property
    def layout_dir(self) -> Path:
        return self.root / "oci"

    async def import_image(self, ref: str, name: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        """Copy ``ref`` into the store as ``name`` and unpack it once. Idempotent.

        The copy always runs (it is a few milliseconds when the blobs are
        already here, and for a registry ref it picks up a moved tag); the
        unpack is skipped when that manifest is already unpacked.
        """
        validate_ref(ref)
        validate_name(name)
        progress = on_progress or _ignore
        source = local_path(ref)
        # Checked here so that a missing file is a plain 400 whatever skopeo says.
        if source is not None and not Path(source).exists():
            raise ValidationError(f"image source {source} does not exist")
        self.root.mkdir(parents=True, exist_ok=True)
        async with file_lock(
            self.root / ".lock",
            on_wait=lambda: progress("waiting for another image import to finish…"),
        ):
            await asyncio.to_thread(_remove_contents, self.root / "tmp")
            progress(f"copying {ref}…")
            result = await self._runner.run(
                ["skopeo", "copy", ref, f"oci:{self.layout_dir}:{name}"],
                on_output=lambda line: progress(f"skopeo: {line}"),
            )
            if not result.ok:
                raise _copy_error(ref, result)
            digest = self._digest_of(name)
            if self.has(digest):
                progress(f"{digest} is already unpacked")
            else:
                await self._unpack(name, digest, progress)
        info = self.info(digest)
        progress(f"image {name} ready: {digest}")
        return info

    def has(self, digest: str) -> bool:
        """Whether ``digest`` is unpacked and ready to be a sandbox's lower dir."""
        return (self._bundle_dir(digest) / "rootfs").is_dir()

    def rootfs_path(self, digest: str) -> Path:
        """The read-only rootfs of an unpacked image; never write into it."""
        path = self._bundle_dir(digest) / "rootfs"
        if not path.is_dir():
            raise NotFoundError(f"image {digest} is not in this host's store")
        return path

    def info(self, digest: str) -> ImageInfo:
        """Digest and size of an image whose manifest is in the store (unpacked or not)."""
        manifest = self._manifest(digest)
        blobs = [manifest.get("config", {}), *manifest.get("layers", [])]
        size = sum(int(blob.get("size", 0)) for blob in blobs if isinstance(blob, dict))
        return ImageInfo(digest=digest, size_bytes=size)

    def config(self, digest: str) -> ImageConfig:
        """The image's runtime config (Env, WorkingDir, User, Entrypoint, Cmd, Labels)."""
        manifest = self._manifest(digest)
        config_digest = str(manifest.get("config", {}).get("digest", ""))
        blob = _read_json(self._blob_path(config_digest))
        section = blob.get("config") if isinstance(blob, dict) else None
        cfg: dict[str, Any] = section if isinstance(section, dict) else {}
        return ImageConfig(
            env=tuple(str(v) for v in cfg.get("Env") or ()),
            working_dir=str(cfg.get("WorkingDir") or ""),
            user=str(cfg.get("User") or ""),
            entrypoint=tuple(str(v) for v in cfg.get("Entrypoint") or ()),
            cmd=tuple(str(v) for v in cfg.get("Cmd") or ()),
            labels={str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()},
        )

    # --- internals -----------------------------------------------------------

    def _bundle_dir(self, digest: str) -> Path:
        return self.root / "rootfs" / digest_hex(digest)

    def _blob_path(self, digest: str) -> Path:
        return self.layout_dir / "blobs" / "sha256" / digest_hex(digest)

    def _manifest(self, digest: str) -> dict[str, Any]:
        path = self._blob_path(digest)
        if not path.is_file():
            raise NotFoundError(f"image {digest} is not in this host's store")
        manifest = _read_json(path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
            raise NotFoundError(f"{digest} is not an image manifest")
        return manifest

    def _digest_of(self, name: str) -> str:
        """The manifest digest the layout's index holds for ``name`` (just written by skopeo)."""
        index = _read_json(self.layout_dir / "index.json")
        entries = index.get("manifests", []) if isinstance(index, dict) else []
        for entry in reversed(entries):
            annotations = entry.get("annotations") or {}
            if annotations.get(_REF_NAME_ANNOTATION) != name:
                continue
            if entry.get("mediaType") != _MANIFEST_MEDIA_TYPE:
                raise InternalError(f"image {name} was stored as {entry.get('mediaType')}, not an image manifest")
            digest = str(entry.get("digest", ""))
            digest_hex(digest)  # refuse anything that is not a plain sha256 digest
            return digest
        raise InternalError(f"skopeo reported success but the store has no image named {name}")

    async def _unpack(self, name: str, digest: str, progress: ProgressCallback) -> None:
        progress(f"unpacking {digest}…")
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"unpack-{digest_hex(digest)[:12]}-", dir=tmp_root))
        try:
            bundle = work / "bundle"
            result = await self._runner.run(
                ["umoci", "unpack", "--image", f"{self.layout_dir}:{name}", str(bundle)],
                on_output=lambda line: progress(f"umoci: {line}"),
            )
            if not result.ok:
                raise InternalError(f"umoci unpack of {digest} failed: {_tool_message(result)}")
            _check_unpacked(bundle, digest)
            final = self._bundle_dir(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                # A bundle without its rootfs (has() said no): only a hand-edited
                # store gets here. Move it aside so the rename below can publish.
                final.rename(work / "stale")
            # The rename is the publish step: readers see nothing or everything.
            bundle.rename(final)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)


def _check_unpacked(bundle: Path, digest: str) -> None:
    if not (bundle / "rootfs").is_dir():
        raise InternalError(f"umoci unpack of {digest} produced no rootfs")
    # Guards the name→digest step: the bundle must be of the manifest we resolved.
    meta = _read_json(bundle / "umoci.json")
    walk = meta.get("from_descriptor_path", {}).get("descriptor_walk", [])
    if walk and walk[0].get("digest") != digest:
        raise InternalError(f"umoci unpacked {walk[0].get('digest')} instead of {digest}")


def _copy_error(ref: str, result: CommandResult) -> QboxError:
    message = _tool_message(result)
    if any(marker in result.output_tail for marker in _SOURCE_FAILURE_MARKERS):
        return ValidationError(f"cannot read image {ref}: {message}")
    return InternalError(f"skopeo copy of {ref} failed: {message}")


def _tool_message(result: CommandResult, lines: int = 8) -> str:
    """The end of a tool's output, with skopeo's logrus framing taken off."""
    out = []
    for line in result.output_tail.splitlines()[-lines:]:
        match = _LOGRUS_MSG_RE.search(line)
        out.append(match.group(1).replace('\\"', '"') if match else line)
    return " | ".join(out) or f"exit status {result.returncode}"


def _read_json(path: Path) -> Any:
    # Callers check the files they expect a user to ask about; anything missing
    # or unreadable here means a damaged store, not a wrong request.
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InternalError(f"cannot read {path}: {exc}") from exc


def _remove_contents(directory: Path) -> None:
    if not directory.is_dir():
        return
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


def _ignore(_: str) -> None:
    pass
