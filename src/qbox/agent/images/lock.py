"""A machine-wide exclusive lock on a file (``fcntl.flock``), awaited without blocking.

Image builds and imports take seconds to minutes and may run in several
processes at once (two agents, ``qbox up`` and a test run); the lock is what
keeps them from writing the same cache entry or OCI layout concurrently. The
kernel drops a flock when its holder dies, so a crashed builder never leaves
a stale lock behind.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

# Polling instead of a blocking flock() in a worker thread: a cancelled wait
# then simply stops, with no thread left behind that could take the lock later.
POLL_INTERVAL_SECONDS = 0.1


@asynccontextmanager
async def file_lock(
    path: Path,
    *,
    on_wait: Callable[[], None] | None = None,
    poll_interval: float = POLL_INTERVAL_SECONDS,
) -> AsyncIterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block.

    ``on_wait`` is called once if the lock is busy, so callers can tell the
    user why nothing seems to happen.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait()
                told = True
                await asyncio.sleep(poll_interval)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
