"""A sandbox's root filesystem: the image's read-only rootfs under a private writable layer.

Layout of ``DATA_DIR/sandboxes/<id>/``::

    upper/   the sandbox's writes (overlayfs upperdir)
    work/    overlayfs workdir
    rootfs/  the merged view the runtime pivots into

Spawn takes milliseconds because nothing is copied. The mount is made with
mount(2) directly (see ``mounts.py``). Mounts live in the host's mount
namespace, so they survive an agent restart; ``prepare`` reuses a directory
left from before and ``release`` cleans up whatever part of it exists.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Protocol

from qbox.agent import mounts

# overlayfs splits its options on ',' and lowerdir on ':'; such paths would
# be read as other options.
_FORBIDDEN_IN_PATHS = (",", ":", "\\")


class SandboxFilesystem(Protocol):
    def prepare(self, sandbox_dir: Path, image_rootfs: Path, seed: dict[str, bytes]) -> Path:
        """Make ``sandbox_dir/rootfs`` the sandbox's root, with ``seed`` files
        (relative path → content) written into its private layer; return it."""
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


def _write_seed(layer: Path, seed: dict[str, bytes]) -> None:
    # ``layer`` is a directory qbox just created, not image content, so plain
    # paths are safe here (no symlinks can be in it yet).
    for relative, content in seed.items():
        target = layer / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


class OverlayFilesystem:
    def prepare(self, sandbox_dir: Path, image_rootfs: Path, seed: dict[str, bytes]) -> Path:
        upper, work, merged = sandbox_dir / "upper", sandbox_dir / "work", sandbox_dir / "rootfs"
        if self.is_ready(sandbox_dir):
            return merged
        for directory in (upper, work, merged):
            directory.mkdir(parents=True, exist_ok=True)
        _write_seed(upper, seed)
        options = (f"lowerdir={_check_path(image_rootfs)},upperdir={_check_path(upper)},"
                   f"workdir={_check_path(work)}")
        mounts.mount("overlay", merged, "overlay", mounts.MS_NODEV, options)
        return merged

    def is_ready(self, sandbox_dir: Path) -> bool:
        return mounts.is_mount_point(sandbox_dir / "rootfs")

    def release(self, sandbox_dir: Path) -> None:
        merged = sandbox_dir / "rootfs"
        try:
            mounts.umount(merged)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # Something still holds it (a shell cd'ed into it on the host):
            # detach now, the kernel frees it when the last user goes.
            mounts.umount(merged, mounts.MNT_DETACH)
        shutil.rmtree(sandbox_dir, ignore_errors=True)


class DirectoryFilesystem:
    """A plain directory instead of an overlay: for the fake runtime (no root, no mounts)."""

    def prepare(self, sandbox_dir: Path, image_rootfs: Path, seed: dict[str, bytes]) -> Path:
        merged = sandbox_dir / "rootfs"
        merged.mkdir(parents=True, exist_ok=True)
        _write_seed(merged, seed)
        return merged

    def is_ready(self, sandbox_dir: Path) -> bool:
        return (sandbox_dir / "rootfs").is_dir()

    def release(self, sandbox_dir: Path) -> None:
        shutil.rmtree(sandbox_dir, ignore_errors=True)
