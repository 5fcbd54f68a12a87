"""File operations inside a sandbox's root, on file descriptors only.

The rootfs is untrusted (see ``openat2.py``): any component of a path may be
a symlink planted to lead out of it. So every path is resolved once, by the
kernel, with ``openat2(RESOLVE_IN_ROOT)``: only the *parent directory* is
resolved that way, and the last component is then handled with ``*at``
syscalls that do not follow it. Removing or renaming a symlink therefore acts
on the link, and nothing is ever re-opened by a host path.

Paths are normalised lexically first (``..`` clamps at ``/``, as it does in
the sandbox), so the last component is always a plain name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import posixpath
import secrets
import threading
import stat as stats
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from qbox.agent.openat2 import open_in_root
from qbox.core.errors import (
    ConflictError,
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QboxError,
    ValidationError,
)
from qbox.core.timefmt import to_wire

T = TypeVar("T")
_MAX_PATH = 4096
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY
_NOT_FOUND = (errno.ENOENT,)
# EAGAIN: the path kept changing while it was resolved (a rename race in the sandbox).
_CONFLICT = (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EXDEV, errno.EBUSY,
             errno.ENXIO, errno.EAGAIN)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_INVALID = (errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP)


def _error_for(exc: OSError, path: str) -> QboxError | OSError:
    code = exc.errno
    if code in _NOT_FOUND:
        return NotFoundError(f"{path}: no such file or directory")
    if code in _CONFLICT:
        return ConflictError(f"{path}: {os.strerror(code or 0).lower()}")
    if code in _DENIED:
        return PermissionDeniedError(f"{path}: permission denied")
    if code in _NO_SPACE:
        return InsufficientStorageError(f"{path}: no space left in the sandbox")
    if code in _INVALID:
        return ValidationError.for_fields({"path": f"{path}: {os.strerror(code or 0).lower()}"})
    return exc


@contextlib.contextmanager
def _mapped(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _error_for(exc, path) from exc


def _entry(st: os.stat_result) -> dict[str, Any]:
    return {"isDir": stats.S_ISDIR(st.st_mode), "size": st.st_size,
            "mode": stats.filemode(st.st_mode), "mtime": _wire_time(st.st_mtime)}


def _wire_time(seconds: float) -> str | None:
    return to_wire(datetime.fromtimestamp(seconds, UTC))


Identity = Callable[[], contextlib.AbstractContextManager[None]]


class SandboxFiles:
    """Reads and writes below ``root``, every filesystem call made inside ``identity``.

    The agent passes ``fsid.acting_as(uid, gid)`` of the sandbox user's host
    ids: permission checks are the user's and new files are the user's; it
    enters the object first (``with files:``) to open the root as itself. The
    synchronous methods block; the agent calls them from worker threads (the
    filesystem ids are per thread).
    """

    def __init__(self, root: Path, *, home: str = "/home/user",
                 identity: Identity = contextlib.nullcontext,
                 owner: tuple[int, int] | None = None) -> None:
        self._root = root
        self._home = home
        self._identity = identity
        # Host ids to give new files when ``identity`` does not (acting as the
        # sandbox's root keeps the agent's own ids, and so its DAC override).
        self._owner = owner
        self._local = threading.local()

    # --- paths ---------------------------------------------------------------

    def normalize(self, path: str) -> str:
        """The absolute sandbox path ``path`` names (``..`` clamps at ``/``)."""
        if not isinstance(path, str) or not path:
            raise ValidationError.for_fields({"path": "must not be empty"})
        if "\0" in path:
            raise ValidationError.for_fields({"path": "must not contain NUL bytes"})
        if len(path) > _MAX_PATH:
            raise ValidationError.for_fields({"path": "is too long"})
        joined = path if path.startswith("/") else posixpath.join(self._home, path)
        # One leading slash (normpath keeps "//"); normpath drops ".." at the root.
        return posixpath.normpath("/" + joined.lstrip("/"))

    @contextlib.contextmanager
    def _acting(self) -> Iterator[None]:
        """One operation in this thread: the root opened as the agent (the host
        directories above it are not the sandbox user's to search), then the
        identity taken. The fd is this thread's alone: nothing another task does
        (a cancelled request) can close it, or hand its number to another file,
        while the operation runs."""
        fd = os.open(self._root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._local.fd = fd
        try:
            with self._identity():
                yield
        finally:
            self._local.fd = None
            os.close(fd)

    @contextlib.contextmanager
    def _root_fd(self) -> Iterator[int]:
        held = getattr(self._local, "fd", None)
        if held is not None:
            yield held
            return
        fd = os.open(self._root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _parent(self, path: str) -> Iterator[tuple[int, str]]:
        """The resolved parent directory's fd and the last component of ``path``."""
        if path == "/":
            raise ValidationError.for_fields({"path": "the root directory itself"})
        parent, name = posixpath.split(path)
        with self._root_fd() as root, _mapped(path):
            fd = open_in_root(root, parent, _DIR_FLAGS)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        with self._root_fd() as root, _mapped(path):
            return open_in_root(root, path, flags, mode)

    # --- reading -------------------------------------------------------------

    def stat(self, path: str) -> dict[str, Any]:
        normal = self.normalize(path)
        result: dict[str, Any] = {"path": normal, "exists": False, "size": 0, "mode": "",
                                  "isDir": False, "isSymlink": False, "symlinkTarget": "",
                                  "modifiedAt": None}
        try:
            with self._acting():
                if normal == "/":
                    fd = self._open(normal, _DIR_FLAGS)
                    try:
                        st = os.fstat(fd)
                    finally:
                        os.close(fd)
                    target = None
                else:
                    with self._parent(normal) as (parent, name), _mapped(normal):
                        st, target = _lstat_and_target(parent, name)
        except (NotFoundError, ConflictError):
            return result  # a missing component, or a file where a directory should be
        result.update(exists=True, size=st.st_size, mode=stats.filemode(st.st_mode),
                      isDir=stats.S_ISDIR(st.st_mode), isSymlink=target is not None,
                      symlinkTarget=target or "", modifiedAt=_wire_time(st.st_mtime))
        return result

    def list(self, path: str) -> list[dict[str, Any]]:
        normal = self.normalize(path)
        with self._acting():
            fd = self._open(normal, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with _mapped(normal), os.scandir(fd) as entries:
                    out = []
                    for entry in entries:  # scandir never yields "." or ".."
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed while we listed
                        out.append({"name": entry.name, **_entry(st)})
            finally:
                os.close(fd)
        out.sort(key=lambda item: str(item["name"]))
        return out

    def open_read(self, path: str) -> tuple[BinaryIO, int]:
        """An open file (read it, then close it) and its size at open time."""
        normal = self.normalize(path)
        with self._acting():
            # O_NONBLOCK: a FIFO planted at the path must not hang the open.
            fd = self._open(normal, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if stats.S_ISDIR(st.st_mode):
                raise ConflictError(f"{normal}: is a directory")
            if not stats.S_ISREG(st.st_mode):
                raise ConflictError(f"{normal}: not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=0), st.st_size
        except BaseException:
            os.close(fd)
            raise

    # --- writing -------------------------------------------------------------

    async def write(self, path: str, chunks: AsyncIterator[bytes] | Iterable[bytes], *,
                    mode: int = 0o644, create_parents: bool = True,
                    max_bytes: int | None = None) -> dict[str, Any]:
        """Replace ``path`` atomically: readers see the old file or the whole new one."""
        normal = self.normalize(path)
        parent, name, tmp, fd = await run_to_end(self._begin_write, normal,
                                                        create_parents)
        try:
            try:
                with _mapped(normal):
                    written = await _copy_into(fd, chunks, max_bytes, normal)
                await run_to_end(self._commit, fd, parent, tmp, name, mode, normal)
            except BaseException:
                with contextlib.suppress(OSError), self._identity():
                    os.unlink(tmp, dir_fd=parent)
                raise
            finally:
                os.close(fd)
        finally:
            os.close(parent)
        return {"path": normal, "size": written}

    def _begin_write(self, normal: str, create_parents: bool) -> tuple[int, str, str, int]:
        """The parent's fd, the name, and a new temporary file beside it (open)."""
        with self._acting():
            if create_parents:
                self._make_dirs(posixpath.dirname(normal), 0o755)
            with self._parent(normal) as (parent, name), _mapped(normal):
                try:
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if stats.S_ISDIR(st.st_mode):
                        raise ConflictError(f"{normal}: is a directory")
                    if not os.access(name, os.W_OK, dir_fd=parent, effective_ids=True,
                                     follow_symlinks=False) and not stats.S_ISLNK(st.st_mode):
                        raise PermissionDeniedError(f"{normal}: permission denied")
                tmp = f".{name[:200]}.{secrets.token_hex(6)}.qbox-tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=parent)
                if self._owner is not None:
                    os.fchown(fd, *self._owner)
                return os.dup(parent), name, tmp, fd

    def _commit(self, fd: int, parent: int, tmp: str, name: str, mode: int,
                normal: str) -> None:
        # No fsync: the rename alone makes readers see the old file or the whole new
        # one. Durability across a host crash is not ours to buy: a sandbox's disk
        # (no journal, agent/disk.py) does not outlive the host's sandboxes, and
        # an fsync through the loop device would cost every small write milliseconds.
        with self._acting(), _mapped(normal):
            os.fchmod(fd, mode & 0o7777)
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)

    async def append(self, path: str, chunks: AsyncIterator[bytes] | Iterable[bytes], *,
                     mode: int = 0o644, create_parents: bool = True,
                     max_bytes: int | None = None) -> dict[str, Any]:
        """Add to the end of ``path`` (created with ``mode`` if missing; an existing file
        keeps its mode). Not atomic: a reader may see part of the new data."""
        normal = self.normalize(path)
        fd = await run_to_end(self._open_append, normal, mode, create_parents)
        try:
            with _mapped(normal):
                written = await _copy_into(fd, chunks, max_bytes, normal)
        finally:
            os.close(fd)
        return {"path": normal, "size": written}

    def _open_append(self, normal: str, mode: int, create_parents: bool) -> int:
        with self._acting():
            if create_parents:
                self._make_dirs(posixpath.dirname(normal), 0o755)
            fd = self._open(normal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK,
                            mode & 0o7777)
        try:
            st = os.fstat(fd)
            if not stats.S_ISREG(st.st_mode):
                raise ConflictError(f"{normal}: not a regular file")
            if self._owner is not None and st.st_size == 0 and st.st_uid == os.geteuid():
                os.fchown(fd, *self._owner)  # just created by us
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def mkdir(self, path: str, *, mode: int = 0o755, parents: bool = False) -> None:
        normal = self.normalize(path)
        with self._acting():
            if parents:
                self._make_dirs(normal, mode)
                return
            with self._parent(normal) as (parent, name), _mapped(normal):
                os.mkdir(name, mode & 0o7777, dir_fd=parent)
                self._own(parent, name)

    def rename(self, src: str, dst: str) -> None:
        src_path, dst_path = self.normalize(src), self.normalize(dst)
        with self._acting(), self._parent(src_path) as (src_dir, src_name), \
                self._parent(dst_path) as (dst_dir, dst_name), _mapped(src_path):
            os.rename(src_name, dst_name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)

    def remove(self, path: str, *, recursive: bool = False) -> None:
        normal = self.normalize(path)
        with self._acting(), self._parent(normal) as (parent, name), _mapped(normal):
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stats.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent)
            elif recursive:
                _remove_tree(parent, name, normal)
            else:
                try:
                    os.rmdir(name, dir_fd=parent)
                except OSError as exc:
                    if exc.errno == errno.ENOTEMPTY:
                        raise ConflictError(f"{normal}: directory not empty; "
                                            "pass recursive to remove it") from exc
                    raise

    def _make_dirs(self, path: str, mode: int) -> None:
        """``mkdir -p`` one component at a time, each step resolved in the root."""
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:depth])
            with self._parent(sub) as (parent, name), _mapped(sub):
                try:
                    os.mkdir(name, mode & 0o7777, dir_fd=parent)
                except FileExistsError:
                    # A directory, or a symlink the next step resolves in the root.
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                    if not (stats.S_ISDIR(st.st_mode) or stats.S_ISLNK(st.st_mode)):
                        raise ConflictError(f"{sub}: not a directory") from None
                    continue
                self._own(parent, name)

    def _own(self, parent: int, name: str) -> None:
        if self._owner is not None:
            os.chown(name, *self._owner, dir_fd=parent, follow_symlinks=False)


# Each level of a tree being removed: never through a symlink, never blocking on a
# FIFO or device a racing sandbox swapped in (shutil.rmtree opens without these).
_WALK_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_REMOVE_DEPTH = 256


def _remove_tree(parent: int, name: str, path: str, depth: int = 0) -> None:
    """``rm -r`` of directory ``name`` below ``parent``, each level opened from the one
    above without following links: whatever the sandbox renames meanwhile, nothing
    outside the tree is opened or removed."""
    if depth >= MAX_REMOVE_DEPTH:
        raise ConflictError(f"{path}: more than {MAX_REMOVE_DEPTH} levels deep; remove it in parts")
    try:
        fd = os.open(name, _WALK_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ConflictError(f"{path}: changed while it was being removed") from exc
        raise
    try:
        with os.scandir(fd) as entries:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in names:
            if is_dir:
                _remove_tree(fd, child, path, depth + 1)
                continue
            try:
                os.unlink(child, dir_fd=fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:  # swapped for a directory since the listing
                _remove_tree(fd, child, path, depth + 1)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ENOTEMPTY):  # swapped, or refilled meanwhile
            raise ConflictError(f"{path}: changed while it was being removed") from exc
        raise


async def run_to_end(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, awaited to its end even if the caller is
    cancelled: the caller's cleanup (closing fds the thread uses) must not run
    while the thread still works on them."""
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


def _lstat_and_target(parent: int, name: str) -> tuple[os.stat_result, str | None]:
    """``name``'s own stat, and its target if it is a symlink: as one observation, though
    the sandbox may swap a link and a file between the two calls."""
    for _ in range(8):
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stats.S_ISLNK(st.st_mode):
            return st, None
        try:
            return st, os.readlink(name, dir_fd=parent)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no longer a link; look again
                raise
    raise OSError(errno.EAGAIN, "changed while it was read")


async def _copy_into(fd: int, chunks: AsyncIterator[bytes] | Iterable[bytes],
                     max_bytes: int | None, path: str) -> int:
    written = 0

    def put(chunk: bytes) -> None:
        nonlocal written
        written += len(chunk)
        if max_bytes is not None and written > max_bytes:
            raise PayloadTooLargeError(f"{path}: more than {max_bytes} bytes",
                                       details={"maxBytes": max_bytes})
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]

    if isinstance(chunks, AsyncIterator):
        async for chunk in chunks:
            put(chunk)
    else:
        for chunk in chunks:
            put(chunk)
    return written
