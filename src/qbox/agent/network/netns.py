"""Named network namespaces without spawning a process.

A network namespace belongs to a *thread*, so one is made by a short-lived
thread that calls ``unshare(CLONE_NEWNET)``, pins the namespace by
bind-mounting ``/proc/thread-self/ns/net`` onto ``/run/netns/<name>`` (where
``ip netns`` looks too), runs the caller's setup inside it and exits. The
agent's own threads never change namespace, so nothing has to be restored.
(``ip netns add`` costs a fork+exec; pyroute2's ``netns.create`` forks too.)

Removing is an unmount and an unlink: the kernel destroys the namespace and
the veth end in it (and with it the host end) once nothing else holds it,
asynchronously and in batches (measured: 20 namespaces gone in ≈55 ms,
where deleting each veth by netlink takes ≈30 ms apiece).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from qbox.agent import mounts

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20

T = TypeVar("T")

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.unshare.argtypes = [ctypes.c_int]
    return _libc


def prepare_dir(directory: Path = NETNS_DIR) -> None:
    """Make ``directory`` a shared mount, as ``ip netns`` does.

    Namespace mounts made under it then propagate to mount namespaces
    created later (container runtimes, services with private /tmp), and so
    does their unmount: a copy held elsewhere cannot keep a deleted
    sandbox's namespace, and its veth, alive.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        mounts.mount("", directory, None, MS_SHARED | MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        mounts.mount(str(directory), directory, None, MS_BIND | MS_REC)
        mounts.mount("", directory, None, MS_SHARED | MS_REC)


def create(path: Path, setup: Callable[[], T]) -> T:
    """Create a namespace pinned at ``path`` and run ``setup`` inside it.

    If ``setup`` fails the namespace is removed again and its error raised.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    created: list[bool] = []

    def inside() -> None:
        try:
            if _c().unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
            os.close(fd)
            created.append(True)
            mounts.mount("/proc/thread-self/ns/net", path, None, MS_BIND)
            outcome.append(setup())
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failure.append(exc)

    thread = threading.Thread(target=inside, name=f"netns-{path.name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        if created:  # never someone else's file that was already there
            remove(path)
        raise failure[0]
    return outcome[0]


def remove(path: Path) -> None:
    """Unpin and delete a namespace; missing is not an error."""
    mounts.umount(path, mounts.MNT_DETACH)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def exists(path: Path) -> bool:
    # A pinned namespace is an nsfs mount: its device differs from the directory's.
    return os.path.ismount(path)
