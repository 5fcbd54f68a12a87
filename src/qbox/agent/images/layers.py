"""Image layers on disk: overlayfs-format dirs to OCI layer tars, and cleaning unpacked trees.

A built image's own layer is kept as a directory in overlayfs format (a
whiteout is a 0/0 character device, an opaque directory carries
``trusted.overlay.opaque=y``) because that is what a sandbox mounts as a
lower dir. Registries and ``umoci`` want the OCI format instead (a whiteout
is an empty ``.wh.<name>`` file, an opaque directory holds ``.wh..wh..opq``);
``write_layer_tar`` converts one way. Image content is untrusted:
``remove_device_nodes`` takes the device nodes out of an unpacked rootfs.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# overlayfs's own bookkeeping (origin, impure, redirect…) means nothing in
# another tree; opaque is turned into the OCI marker instead.
OVERLAY_XATTR_PREFIX = "trusted.overlay."


@dataclass(frozen=True)
class LayerTar:
    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    size_bytes: int
    files: int  # entries other than directories


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def write_layer_tar(layer_dir: Path, dest: Path) -> LayerTar:
    """Write ``layer_dir`` (overlayfs format) to ``dest`` as an OCI layer tar.

    The order is sorted and nothing of the host leaks in (no user names,
    ids as stored), so the same tree always gives the same diff id.
    """
    files = 0
    seen_inodes: dict[tuple[int, int], str] = {}
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel, st in _walk(layer_dir):
            path = layer_dir / rel
            if is_whiteout(st):
                parent, _, name = rel.rpartition("/")
                tar.addfile(_entry(_join(parent, WHITEOUT_PREFIX + name), tarfile.REGTYPE, st))
                files += 1
                continue
            xattrs = _xattrs(path)
            if stat.S_ISDIR(st.st_mode):
                info = _entry(rel, tarfile.DIRTYPE, st, xattrs)
                tar.addfile(info)
                if xattrs.get(OPAQUE_XATTR) == b"y":
                    tar.addfile(_entry(_join(rel, OPAQUE_MARKER), tarfile.REGTYPE, st))
                continue
            files += 1
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen_inodes:
                info = _entry(rel, tarfile.LNKTYPE, st, xattrs)
                info.linkname = seen_inodes[key]
                tar.addfile(info)
                continue
            seen_inodes[key] = rel
            if stat.S_ISREG(st.st_mode):
                info = _entry(rel, tarfile.REGTYPE, st, xattrs)
                info.size = st.st_size
                with open(path, "rb") as data:
                    tar.addfile(info, data)
            elif stat.S_ISLNK(st.st_mode):
                info = _entry(rel, tarfile.SYMTYPE, st, xattrs)
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISFIFO(st.st_mode):
                tar.addfile(_entry(rel, tarfile.FIFOTYPE, st, xattrs))
            else:
                # Sockets and real device nodes are not image content.
                files -= 1
    digest = hashlib.sha256()
    with open(dest, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return LayerTar(f"sha256:{digest.hexdigest()}", dest.stat().st_size, files)


def remove_device_nodes(root: Path, *, keep_whiteouts: bool = False) -> int:
    """Delete every character and block device below ``root``; return how many.

    Symlinks are never followed. An image has no business shipping devices:
    the runtime gives each sandbox its own /dev. With ``keep_whiteouts`` (a
    layer in overlayfs format) the 0/0 character devices stay.
    """
    removed = 0
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
                elif (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and not (
                    keep_whiteouts and is_whiteout(st)
                ):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def tree_size(root: Path) -> int:
    """Bytes of disk ``root`` uses (allocated blocks; hard links counted once)."""
    if not os.path.lexists(root):
        return 0
    total = 0
    seen: set[tuple[int, int]] = set()
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total + os.lstat(root).st_blocks * 512


def _walk(root: Path) -> list[tuple[str, os.stat_result]]:
    out: list[tuple[str, os.stat_result]] = []

    def visit(directory: Path, prefix: str) -> None:
        for name in sorted(os.listdir(directory)):
            st = os.lstat(directory / name)
            rel = _join(prefix, name)
            out.append((rel, st))
            if stat.S_ISDIR(st.st_mode):
                visit(directory / name, rel)

    visit(root, "")
    return out


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _entry(name: str, kind: bytes, st: os.stat_result, xattrs: dict[str, bytes] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode) if kind != tarfile.REGTYPE or not is_whiteout(st) else 0
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    info.pax_headers = {
        f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
        for key, value in sorted((xattrs or {}).items())
        if not key.startswith(OVERLAY_XATTR_PREFIX)
    }
    return info


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for key in names:
        try:
            out[key] = os.getxattr(path, key, follow_symlinks=False)
        except OSError:
            continue
    return out
