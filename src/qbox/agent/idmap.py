"""User-namespace id mapping: root in a sandbox is an unprivileged uid range on the host.

Every crun sandbox gets its own user namespace with the same mapping: ids
0–65535 inside are ``base``–``base+65535`` on the host (100000–165535 by
default). A sandbox's root therefore holds no privilege over anything on the
host, and a file it writes lands owned by ``base + uid``.

The image rootfs is shared by every sandbox and owned by host root (umoci
unpacks it with the image's own ids). Instead of a chowned copy per image,
the overlay's lower layer is an *idmapped mount* of it (Linux ≥ 5.19 for
overlayfs): ``open_tree(OPEN_TREE_CLONE)`` makes a detached copy of the
mount, ``mount_setattr(MOUNT_ATTR_IDMAP)`` shifts its ids by the mapping,
and overlayfs takes it by ``/proc/self/fd/N``. Overlayfs keeps a private
clone of each layer, so the tree fd is closed right after the overlay mount:
nothing is attached anywhere, nothing needs unmounting. Measured ≈0.2 ms.

``mount_setattr`` takes the mapping from a user namespace, so one namespace
with it is made once per agent: a short-lived child ``unshare``\\s, its
maps are written, and its namespace is held open by fd.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# x86_64 syscall numbers (the same in the generic table used by arm64).
_SYS_OPEN_TREE = 428
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_IDMAP = 0x00100000
_CLONE_NEWUSER = 0x10000000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


@dataclass(frozen=True)
class IdMapping:
    """Ids ``0..size-1`` in the sandbox are ``base..base+size-1`` on the host (uids and gids)."""

    base: int = 100_000
    size: int = 65_536

    def __post_init__(self) -> None:
        if self.base < 1 or self.size < 1 or self.base + self.size > 2**32 - 1:
            raise ValueError("the id mapping must be a non-empty range above 0")

    def host_id(self, sandbox_id: int) -> int:
        """The host's uid/gid for ``sandbox_id``; ids outside the range map to nothing."""
        if not 0 <= sandbox_id < self.size:
            raise ValueError(f"id {sandbox_id} is outside the sandbox's mapped range")
        return self.base + sandbox_id

    @property
    def root(self) -> tuple[int, int]:
        """The host uid and gid of the sandbox's root."""
        return self.base, self.base

    def oci(self) -> list[dict[str, int]]:
        """``linux.uidMappings`` / ``gidMappings`` of the OCI spec."""
        return [{"containerID": 0, "hostID": self.base, "size": self.size}]

    def proc_map(self) -> str:
        """The line written to ``/proc/<pid>/uid_map`` and ``gid_map``."""
        return f"0 {self.base} {self.size}\n"


_libc: Any = None


def _syscall() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def _check(rc: int, what: str, path: str | Path = "") -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", str(path) if path else None)
    return rc


# The child only unshares and waits; the agent writes its maps from outside
# (the kernel allows a privileged parent namespace to map any range).
_CHILD = ("import ctypes, sys\n"
          f"if ctypes.CDLL(None, use_errno=True).unshare({_CLONE_NEWUSER}) != 0:\n"
          "    sys.exit(1)\n"
          "sys.stdout.write('x'); sys.stdout.flush(); sys.stdin.read()\n")


def make_userns(mapping: IdMapping) -> int:
    """An fd of a new user namespace with ``mapping`` (the caller closes it)."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, close_fds=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.read(1) != b"x":
            raise OSError("cannot create a user namespace (unshare(CLONE_NEWUSER) failed)")
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{child.pid}/{name}").write_text(mapping.proc_map())
        return os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        child.stdin.close()
        child.stdout.close()
        child.wait()


def idmapped_tree(source: Path, userns_fd: int) -> int:
    """A detached, recursive copy of the mount at ``source`` with its ids shifted by
    the namespace's mapping; an ``O_PATH``-like fd the caller closes."""
    fd = _check(_syscall()(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source),
                           _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_RECURSIVE),
                "open_tree", source)
    attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    try:
        _check(_syscall()(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH | _AT_RECURSIVE,
                          ctypes.byref(attr), ctypes.sizeof(attr)),
               "mount_setattr(MOUNT_ATTR_IDMAP)", source)
    except BaseException:
        os.close(fd)
        raise
    return int(fd)


class IdMapper:
    """Idmapped trees for one mapping; the user namespace is made on first use and kept
    (one fd) for the agent's lifetime."""

    def __init__(self, mapping: IdMapping) -> None:
        self.mapping = mapping
        self._userns: int | None = None
        self._lock = threading.Lock()

    def tree(self, source: Path) -> int:
        with self._lock:
            if self._userns is None:
                self._userns = make_userns(self.mapping)
            userns = self._userns
        return idmapped_tree(source, userns)
