"""A build sandbox's writable layer made into an image layer (overlayfs format, image ids).

What a build's steps changed is the overlay's upper dir. Before it becomes
a layer it is copied out (the sandbox's disk goes with the sandbox) and
cleaned of what is not the steps' doing:

* what qbox and the runtime put there at boot (/etc/hostname, /etc/hosts,
  the default home, mount points): whatever the upper held before the first
  step and still holds unchanged;
* the user namespace's id shift: host ids ``base+n`` become ``n`` again;
* overlayfs's private xattrs, except ``trusted.overlay.opaque`` (the layer's
  "this directory replaces the one below" mark, which the store turns into
  ``.wh..wh..opq``).

The copy is read by the agent as root, so nothing here follows a symlink:
the tree is the sandbox's, stopped, but its content is untrusted.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
from pathlib import Path

from qbox.agent.idmap import IdMapping
from qbox.agent.images.layers import OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, is_whiteout
from qbox.core.errors import InternalError

_HASHED_BYTES = 1024 * 1024
# Ids outside the sandbox's range are what the sandbox saw as nobody.
_OVERFLOW_ID = 65534

Fingerprint = tuple[int, int, int, int, int | None, str | None, bool]


def upper_dir(sandbox_dir: Path) -> Path:
    """The sandbox's writable layer: on its disk, beside its rootfs, or (a plain
    directory filesystem, the fake runtime) the rootfs itself."""
    for candidate in (sandbox_dir / "disk" / "upper", sandbox_dir / "upper"):
        if candidate.is_dir():
            return candidate
    return sandbox_dir / "rootfs"


def _fingerprint(path: str) -> Fingerprint:
    st = os.lstat(path)
    content: str | None = None
    mtime: int | None = st.st_mtime_ns
    opaque = False
    if stat.S_ISREG(st.st_mode) and st.st_size <= _HASHED_BYTES:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            content = hashlib.sha256(os.read(fd, _HASHED_BYTES + 1)).hexdigest()
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(path)
    elif stat.S_ISDIR(st.st_mode):
        mtime = None  # changes with every entry; the entries are compared one by one
        opaque = _has_xattr(path, OPAQUE_XATTR)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size if mtime is not None else 0,
            mtime, content, opaque)


def _has_xattr(path: str, name: str) -> bool:
    try:
        return name in os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False


def _walk(top: Path) -> list[str]:
    """Every path below ``top`` relative to it, parents before children."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), top))
    return found


def snapshot(upper: Path) -> dict[str, Fingerprint]:
    """What the layer holds before the first step (what qbox and the runtime wrote)."""
    return {rel: _fingerprint(str(upper / rel)) for rel in _walk(upper)}


async def copy_tree(source: Path, dest: Path) -> None:
    """``cp -a``: ownership, modes, times, xattrs, device nodes and hard links kept."""
    proc = await asyncio.create_subprocess_exec(
        "cp", "-a", "--no-dereference", "--", str(source), str(dest),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise InternalError(f"copying the build's layer failed: "
                            f"{err.decode(errors='replace').strip()[-500:]}")


def clean(layer: Path, upper: Path, baseline: dict[str, Fingerprint],
          mapping: IdMapping | None) -> None:
    """Make the copied ``layer`` of ``upper`` the steps' changes alone, in image ids."""
    for rel in _untouched(upper, baseline):
        _remove(layer / rel)
    for path in [str(layer), *(str(layer / rel) for rel in _walk(layer))]:
        st = os.lstat(path)
        if mapping is not None:
            _unshift(path, st, mapping)
        if not stat.S_ISLNK(st.st_mode):
            _strip_overlay_xattrs(path)


def _untouched(upper: Path, baseline: dict[str, Fingerprint]) -> list[str]:
    """Baseline entries no step changed, children first (a directory only when all
    it holds is going too)."""
    going: set[str] = set()
    for rel in sorted(baseline, key=lambda r: r.count("/"), reverse=True):
        path = upper / rel
        try:
            if _fingerprint(str(path)) != baseline[rel]:
                continue
        except OSError:
            continue
        if stat.S_ISDIR(baseline[rel][0]):
            children = {f"{rel}/{name}" for name in os.listdir(path)}
            if not children <= going:
                continue
        going.add(rel)
    return sorted(going, key=lambda r: r.count("/"), reverse=True)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise


def _image_id(host_id: int, mapping: IdMapping) -> int:
    if mapping.base <= host_id < mapping.base + mapping.size:
        return host_id - mapping.base
    return _OVERFLOW_ID


def _unshift(path: str, st: os.stat_result, mapping: IdMapping) -> None:
    if is_whiteout(st):
        uid = gid = 0  # a whiteout, made by overlayfs with the mounter's (host root's) ids
    else:
        uid, gid = _image_id(st.st_uid, mapping), _image_id(st.st_gid, mapping)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return
    os.lchown(path, uid, gid)
    # chown clears setuid/setgid bits (and file capabilities): put the mode back.
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def _strip_overlay_xattrs(path: str) -> None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return
        raise
    for name in names:
        if name.startswith(OVERLAY_XATTR_PREFIX) and name != OPAQUE_XATTR:
            os.removexattr(path, name, follow_symlinks=False)
