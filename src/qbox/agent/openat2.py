"""Opening paths inside a sandbox's root without ever leaving it.

A sandbox's rootfs is untrusted: its image, or a process in it, can make
``/etc/passwd`` or ``/home`` a symlink to ``/../../etc/shadow`` on the host.
A string join followed by ``open()`` would follow it out (docker cp,
CVE-2018-15664). ``openat2(RESOLVE_IN_ROOT)`` makes the kernel resolve every
component — symlinks and ``..`` included — as if the root were ``/``.
Kernels without openat2 (< 5.6) get a stricter fallback that refuses any
symlink on the way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path
from typing import Any

_SYS_OPENAT2 = 437  # the same number on x86_64 and arm64 (generic syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
# Past this many EAGAINs in a row (a sandbox renaming in a loop), the caller gets EAGAIN.
_EAGAIN_RETRIES = 16


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_syscall: Any = None
_have_openat2: bool | None = None


def _openat2_fn() -> Any:
    global _syscall
    if _syscall is None:
        fn = ctypes.CDLL(None, use_errno=True).syscall
        fn.restype = ctypes.c_long
        fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p,
                       ctypes.POINTER(_OpenHow), ctypes.c_size_t]
        _syscall = fn
    return _syscall


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _open_walking(root_fd: int, path: str, flags: int, mode: int) -> int:
    parts = _components(path)
    if ".." in parts:
        raise OSError(errno.EXDEV, "'..' is not allowed without openat2", path)
    if not parts:
        return os.open(".", flags, mode, dir_fd=root_fd)
    current = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=current)
            os.close(current)
            current = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=current)
    finally:
        os.close(current)


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """Open ``path`` (absolute or relative, as seen inside the root) below ``root_fd``."""
    global _have_openat2
    flags |= os.O_CLOEXEC
    path = path or "/"  # the root itself (an empty path is ENOENT)
    if _have_openat2 is not False:
        how = _OpenHow(flags, mode if flags & (os.O_CREAT | os.O_TMPFILE) else 0,
                       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        for _ in range(_EAGAIN_RETRIES):
            fd = _openat2_fn()(_SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how),
                               ctypes.sizeof(how))
            if fd >= 0:
                _have_openat2 = True
                return int(fd)
            err = ctypes.get_errno()
            # EAGAIN: a rename elsewhere may have moved a ".." this walk crossed, so the
            # kernel refused to vouch for the result; openat2(2) says to try again.
            if err != errno.EAGAIN:
                break
        if err != errno.ENOSYS:
            raise OSError(err, os.strerror(err), path)
        _have_openat2 = False
    return _open_walking(root_fd, path, flags, mode)


class RootDir:
    """An open handle on a sandbox root; all paths given to it stay inside."""

    def __init__(self, root: Path) -> None:
        self._fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> RootDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read_bytes(self, path: str, limit: int) -> bytes | None:
        """The first ``limit`` bytes of a regular file, or None if it is missing or not a file."""
        try:
            fd = open_in_root(self._fd, path, os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENXIO):
                return None
            raise
        try:
            # A FIFO or device planted at /etc/passwd must not hang or feed us forever.
            if not _is_regular(fd):
                return None
            chunks, remaining = [], limit
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def list_dir(self, path: str) -> list[str]:
        """The names in directory ``path`` (sorted), or [] if it is missing or not a directory."""
        try:
            fd = open_in_root(self._fd, path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return []
        try:
            with os.scandir(fd) as entries:
                return sorted(entry.name for entry in entries)
        finally:
            os.close(fd)

    def is_dir(self, path: str) -> bool:
        try:
            fd = open_in_root(self._fd, path, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            return False
        os.close(fd)
        return True

    def make_dirs(self, path: str, *, mode: int = 0o755, uid: int = -1, gid: int = -1) -> None:
        """Create ``path`` and missing parents inside the root; new leaf owned by uid/gid."""
        parts = _components(path)
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if self.is_dir(sub):
                continue
            parent = open_in_root(self._fd, "/".join(parts[:depth - 1]),
                                  os.O_PATH | os.O_DIRECTORY)
            try:
                os.mkdir(parts[depth - 1], mode, dir_fd=parent)
                if depth == len(parts) and (uid >= 0 or gid >= 0):
                    try:
                        os.chown(parts[depth - 1], uid, gid, dir_fd=parent,
                                 follow_symlinks=False)
                    except PermissionError:
                        pass  # unprivileged (fake runtime in tests): ownership is moot
            except FileExistsError:
                pass
            finally:
                os.close(parent)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)
