"""A sandbox's root filesystem: the image's read-only rootfs under a private writable layer.

Layout of ``DATA_DIR/sandboxes/<id>/``::

    disk.img   a sparse ext4 image of the sandbox's disk size (see ``disk.py``)
    disk/      its mount, holding upper/ (the sandbox's writes) and work/
    rootfs/    the overlay of the image under disk/upper: what the runtime pivots into
    sys/       (when the sandbox joins a network namespace) its sysfs

Without a disk size, ``upper/`` and ``work/`` sit directly in the directory.

The image is one or more read-only lower dirs (a built template's own layers
above its base image's rootfs, see ``ImageStore.lower_dirs``). With an id
mapping (``idmap.py``) each lower dir goes in through an idmapped mount, so
the sandbox sees the image owned by its own root, and everything qbox writes
into the layer is owned by the mapped ids.

Spawn takes milliseconds because nothing is copied. Mounts are made with
mount(2) directly (see ``mounts.py``) and live in the host's mount
namespace, so they survive an agent restart; ``prepare`` reuses a directory
left from before and ``release`` unmounts whatever is mounted below the
directory (deepest first) before removing it.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qbox.agent import disk, mounts
from qbox.agent.idmap import IdMapper, IdMapping

# overlayfs splits its options on ',' and lowerdir on ':'; such paths would
# be read as other options.
_FORBIDDEN_IN_PATHS = (",", ":", "\\")


@dataclass(frozen=True)
class LayerOptions:
    # None: no user namespace, the image's ids are the host's.
    mapping: IdMapping | None = None
    # None: the writable layer sits on the host's filesystem, without a quota.
    disk_size_mb: int | None = None


# An image's read-only dirs, top first (``ImageStore.lower_dirs``); a single
# path is one lower dir.
ImageLowers = Sequence[Path] | Path


class SandboxFilesystem(Protocol):
    def prepare(self, sandbox_dir: Path, image_lowers: ImageLowers, seed: dict[str, bytes],
                options: LayerOptions = LayerOptions()) -> Path:
        """Make ``sandbox_dir/rootfs`` the sandbox's root: the image's lower dirs
        (top first) under a private layer with ``seed`` files (relative path →
        content) written into it; return it."""
        ...

    def is_ready(self, sandbox_dir: Path) -> bool: ...

    def release(self, sandbox_dir: Path) -> None:
        """Unmount and remove ``sandbox_dir``; missing parts are not an error."""
        ...


def _check_path(path: Path) -> str:
    text = str(path)
    if not path.is_absolute() or any(ch in text for ch in _FORBIDDEN_IN_PATHS):
        raise ValueError(f"unusable path for an overlay mount: {text!r}")
    return text


def lower_list(image_lowers: ImageLowers) -> list[Path]:
    lowers = [image_lowers] if isinstance(image_lowers, Path) else [Path(p) for p in image_lowers]
    if not lowers:
        raise ValueError("an overlay needs at least one lower dir")
    return lowers


def write_seed(layer: Path, seed: dict[str, bytes], owner: tuple[int, int] | None = None) -> None:
    """Write ``seed`` into ``layer``; what is created is owned by ``owner`` (host ids)."""
    # ``layer`` is a directory qbox just created, not image content, so plain
    # paths are safe here (no symlinks can be in it yet).
    for relative, content in seed.items():
        target = layer / relative
        created = [p for p in reversed(target.parents) if p.is_relative_to(layer)
                   and not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if owner is not None:
            for path in [*created, target]:
                os.chown(path, *owner, follow_symlinks=False)


def unmount_below(directory: Path) -> None:
    """Unmount everything mounted at or below ``directory``, the latest mount first."""
    prefix = str(directory) + "/"
    for entry in reversed(mounts.read_mountinfo()):
        if entry.mount_point == str(directory) or entry.mount_point.startswith(prefix):
            try:
                mounts.umount(entry.mount_point)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                # Something still holds it (a shell cd'ed into it on the host):
                # detach now, the kernel frees it when the last user goes.
                mounts.umount(entry.mount_point, mounts.MNT_DETACH)


class OverlayFilesystem:
    def __init__(self, disks_dir: Path | None = None) -> None:
        # Golden disk images are kept here; None → mkfs per sandbox (slower).
        self._goldens = disk.GoldenImages(disks_dir) if disks_dir is not None else None
        self._mappers: dict[IdMapping, IdMapper] = {}

    def prepare(self, sandbox_dir: Path, image_lowers: ImageLowers, seed: dict[str, bytes],
                options: LayerOptions = LayerOptions()) -> Path:
        merged = sandbox_dir / "rootfs"
        if self.is_ready(sandbox_dir):
            return merged
        lowers = lower_list(image_lowers)
        lower_texts = [_check_path(lower) for lower in lowers]
        owner = options.mapping.root if options.mapping is not None else (0, 0)
        layer = sandbox_dir
        if options.disk_size_mb is not None:
            layer = sandbox_dir / "disk"
            self._mount_disk(sandbox_dir, layer, options.disk_size_mb, owner)
        upper, work = layer / "upper", layer / "work"
        for directory in (upper, work, merged):
            directory.mkdir(parents=True, exist_ok=True)
        # The merged root takes its owner and mode from the upper dir; the
        # image's root is the bottom lower's (layers above only add to it).
        os.chmod(upper, lowers[-1].stat().st_mode & 0o7777)
        os.chown(upper, *owner)
        write_seed(upper, seed, owner if options.mapping is not None else None)
        trees: list[int] = []
        try:
            if options.mapping is not None:
                mapper = self._mapper(options.mapping)
                for lower in lowers:
                    trees.append(mapper.tree(lower))
                lower_texts = [f"/proc/self/fd/{tree}" for tree in trees]
            mounts.mount("overlay", merged, "overlay", mounts.MS_NODEV,
                         f"lowerdir={':'.join(lower_texts)},upperdir={_check_path(upper)},"
                         f"workdir={_check_path(work)}")
        finally:
            for tree in trees:
                os.close(tree)  # overlayfs holds its own clone of each layer
        return merged

    def _mount_disk(self, sandbox_dir: Path, target: Path, size_mb: int,
                    owner: tuple[int, int]) -> None:
        if os.path.ismount(target):
            return
        image = sandbox_dir / "disk.img"
        if not image.exists():
            staging = image.with_suffix(".tmp")
            staging.unlink(missing_ok=True)
            if self._goldens is not None:
                self._goldens.clone(staging, size_mb, owner)
            else:
                disk.make_image(staging, size_mb, owner)
            os.replace(staging, image)
        disk.mount_disk(image, target)

    def _mapper(self, mapping: IdMapping) -> IdMapper:
        mapper = self._mappers.get(mapping)
        if mapper is None:
            mapper = self._mappers[mapping] = IdMapper(mapping)
        return mapper

    def is_ready(self, sandbox_dir: Path) -> bool:
        # A stat, not a scan of the mount table, which grows with the sandboxes:
        # the overlay and the disk are filesystems of their own (st_dev differs).
        return os.path.ismount(sandbox_dir / "rootfs")

    def release(self, sandbox_dir: Path) -> None:
        unmount_below(sandbox_dir)
        # Unlinked even if its loop device is still detaching: the space
        # comes back when the kernel lets go of it.
        (sandbox_dir / "disk.img").unlink(missing_ok=True)
        shutil.rmtree(sandbox_dir, ignore_errors=True)


class DirectoryFilesystem:
    """A plain directory instead of an overlay: for the fake runtime (no root, no mounts)."""

    def prepare(self, sandbox_dir: Path, image_lowers: ImageLowers, seed: dict[str, bytes],
                options: LayerOptions = LayerOptions()) -> Path:
        merged = sandbox_dir / "rootfs"
        merged.mkdir(parents=True, exist_ok=True)
        write_seed(merged, seed)
        return merged

    def is_ready(self, sandbox_dir: Path) -> bool:
        return (sandbox_dir / "rootfs").is_dir()

    def release(self, sandbox_dir: Path) -> None:
        shutil.rmtree(sandbox_dir, ignore_errors=True)
