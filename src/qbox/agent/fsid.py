"""Acting on a sandbox's files as its user: the thread's filesystem uid and gid.

The agent runs as root, but a file written through the API must be checked
and owned as if the sandbox user had written it: ``/etc`` refuses, ``/tmp``
and the home accept, new files belong to the user. Linux keeps a
filesystem uid/gid per *thread* (``setfsuid(2)``); switching it from 0 also
clears the thread's filesystem capabilities (``CAP_DAC_OVERRIDE``,
``CAP_FOWNER``, …) until it switches back. glibc's wrappers are plain
syscalls, unlike ``setuid``, which glibc broadcasts to every thread. So a
worker thread can borrow the identity for one operation without touching
the event loop's thread or the rest of the agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from typing import Any

_libc: Any = None
_lock = threading.Lock()


def _fns() -> Any:
    global _libc
    with _lock:
        if _libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            for name in ("setfsuid", "setfsgid"):
                fn = getattr(libc, name)
                fn.argtypes = [ctypes.c_uint]
                fn.restype = ctypes.c_int
            _libc = libc
    return _libc


def current() -> tuple[int, int]:
    """This thread's filesystem uid and gid (setfsuid(-1) changes nothing and returns it)."""
    libc = _fns()
    return libc.setfsuid(0xFFFFFFFF), libc.setfsgid(0xFFFFFFFF)


@contextlib.contextmanager
def acting_as(uid: int, gid: int) -> Iterator[None]:
    """Run the block with this thread's filesystem ids set to ``uid``/``gid``."""
    libc = _fns()
    old_uid, old_gid = current()
    # gid first: once the uid is not 0 any more the thread may lose the right to change it.
    libc.setfsgid(gid)
    libc.setfsuid(uid)
    try:
        if current() != (uid, gid):
            raise PermissionError(f"cannot act as {uid}:{gid} (the agent must run as root)")
        yield
    finally:
        libc.setfsuid(old_uid)
        libc.setfsgid(old_gid)
