"""The image store's tree on disk: where each part of an image lives, and reading it back.

Layout under ``root``::

    oci/                    one OCI image layout; every template is a tag in it,
                            so blobs are shared between images and stored once
    rootfs/<digest-hex>/    the bundle ``umoci unpack`` made for that manifest;
                            the sandbox's lower dir is its ``rootfs/`` subdir
    layers/<diff-hex>/      a built image's own layer, in overlayfs format
    images/<digest-hex>.json  a built image: {"base", "layers" (top first), "kernels"}
    tmp/                    unpacks, commits and build work dirs in flight
    .lock                   flock held by whoever writes to any of the above

Every directory here is 0700: image content may hold setuid-root files, and
no user of the host may reach them (the sandboxes see them through their
overlay mounts only). Unpacked content is sanitised: device nodes are removed.

An unpacked rootfs is shared by every sandbox of its image and is only ever
mounted as a read-only overlayfs lower dir: nothing in qbox writes into it
after the atomic rename that publishes it. Sandbox changes go to the
sandbox's own upper dir. (The ``config.json`` umoci writes next to it is not
used; the sandbox layer writes its own.) What writes to the tree (import,
commit, push, gc) lives in ``transfer``, ``commit`` and ``gc``; ``ImageStore``
puts them together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbox.agent.images.layout import OciLayout, read_json
from qbox.agent.images.refs import digest_hex, is_digest
from qbox.core.errors import InternalError, NotFoundError

_SUBDIRS = ("oci", "rootfs", "layers", "images", "tmp")
# Prefixes of what a store operation leaves in tmp/ while holding the lock:
# whatever carries them when the lock is free is left over from a crash.
_LOCKED_TMP_PREFIXES = ("unpack-", "commit-", "auth-", "push-")
# Build work dirs are used without the lock (a build runs for minutes);
# gc removes those nobody touched for this long.
_STALE_WORK_DIR_SECONDS = 24 * 3600


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


class StoreTree:
    def __init__(self, root: Path) -> None:
        # skopeo and umoci split "path:tag" at a colon, so the path must not hold one.
        if ":" in str(root):
            raise ValueError(f"image store path {root} must not contain ':'")
        self.root = Path(root)
        self.layout = OciLayout(self.root / "oci")
        # When each image was last imported or committed (monotonic): gc spares
        # recent ones, which a control plane may not have recorded yet.
        self.touched: dict[str, float] = {}

    @property
    def layout_dir(self) -> Path:
        return self.root / "oci"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    # --- reading -------------------------------------------------------------

    def has(self, digest: str) -> bool:
        """Whether ``digest`` (an unpacked base or a committed built image) can be mounted."""
        try:
            self.lower_dirs(digest)
        except NotFoundError:
            return False
        return True

    def digests(self) -> list[str]:
        """Every image a sandbox can be started from here (the control plane's scheduler
        prefers hosts that hold a template's image). Blocking: a directory scan."""
        found = [f"sha256:{entry.name}" for entry in _entries(self.root / "rootfs")
                 if (Path(entry.path) / "rootfs").is_dir()]
        found += [f"sha256:{entry.name.removesuffix('.json')}"
                  for entry in _entries(self.root / "images") if entry.name.endswith(".json")]
        return sorted(digest for digest in set(found) if is_digest(digest) and self._mountable(digest))

    def _mountable(self, digest: str) -> bool:
        try:
            return self.has(digest)
        except (InternalError, OSError):  # a damaged record, or one a gc removes meanwhile
            return False

    def lower_dirs(self, digest: str) -> list[Path]:
        """The read-only dirs a sandbox of ``digest`` stacks, top first; never write into them."""
        record = self.record(digest)
        if record is None:
            return [self.rootfs_path(digest)]
        layers = [self.root / "layers" / h for h in record["layers"]]
        if not all(layer.is_dir() for layer in layers):
            raise NotFoundError(f"image {digest} is not in this host's store")
        return [*layers, self.rootfs_path(record["base"])]

    def rootfs_path(self, digest: str) -> Path:
        """The read-only rootfs of an unpacked base image; never write into it."""
        path = self.bundle_dir(digest) / "rootfs"
        if not path.is_dir():
            raise NotFoundError(f"image {digest} is not in this host's store")
        return path

    def kernels(self, digest: str) -> list[dict[str, Any]] | None:
        """The kernels saved with a built image; None for a base image."""
        record = self.record(digest)
        return None if record is None else list(record.get("kernels") or [])

    def info(self, digest: str) -> ImageInfo:
        """Digest and size of an image whose manifest is in the store (unpacked or not)."""
        manifest = self.layout.manifest(digest)
        blobs = [manifest.get("config", {}), *manifest.get("layers", [])]
        size = sum(int(blob.get("size", 0)) for blob in blobs if isinstance(blob, dict))
        return ImageInfo(digest=digest, size_bytes=size)

    def config(self, digest: str) -> ImageConfig:
        """The image's runtime config (Env, WorkingDir, User, Entrypoint, Cmd, Labels)."""
        cfg = self.layout.config(digest).get("config")
        section: dict[str, Any] = cfg if isinstance(cfg, dict) else {}
        return ImageConfig(
            env=tuple(str(v) for v in section.get("Env") or ()),
            working_dir=str(section.get("WorkingDir") or ""),
            user=str(section.get("User") or ""),
            entrypoint=tuple(str(v) for v in section.get("Entrypoint") or ()),
            cmd=tuple(str(v) for v in section.get("Cmd") or ()),
            labels={str(k): str(v) for k, v in (section.get("Labels") or {}).items()},
        )

    def work_dir(self) -> Path:
        """A fresh private dir on the store's filesystem, for a build to prepare a layer in.

        ``commit`` moves the layer out of it; the caller removes the rest.
        """
        self.prepare_dirs()
        return Path(tempfile.mkdtemp(prefix="work-", dir=self.tmp_dir))

    # --- where things live -----------------------------------------------------

    def bundle_dir(self, digest: str) -> Path:
        return self.root / "rootfs" / digest_hex(digest)

    def record_path(self, digest: str) -> Path:
        return self.root / "images" / f"{digest_hex(digest)}.json"

    def record(self, digest: str) -> dict[str, Any] | None:
        """A built image's record, or None for a base image (or an unknown digest)."""
        path = self.record_path(digest)
        if not path.is_file():
            return None
        record = read_json(path)
        if not isinstance(record, dict) or not is_digest(str(record.get("base"))):
            raise InternalError(f"damaged image record {path}")
        for layer in record.get("layers", []):
            digest_hex(f"sha256:{layer}")
        return record

    def prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for sub in _SUBDIRS:
            (self.root / sub).mkdir(exist_ok=True)
            os.chmod(self.root / sub, 0o700)

    def clear_leftovers(self) -> None:
        """Remove what a crashed operation left in tmp/; call only holding the lock."""
        for entry in os.scandir(self.tmp_dir):
            if entry.name.startswith(_LOCKED_TMP_PREFIXES):
                _remove(entry)

    def clear_stale_work_dirs(self) -> None:
        cutoff = time.time() - _STALE_WORK_DIR_SECONDS
        for entry in os.scandir(self.tmp_dir):
            if entry.name.startswith("work-") and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                _remove(entry)


def human_size(size: int) -> str:
    """``1.2 MB`` style (powers of 1000, as registries and docker show sizes)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        os.unlink(entry.path)
