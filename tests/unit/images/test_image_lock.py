from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from qbox.agent.images.lock import file_lock


async def test_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    order: list[str] = []
    waited: list[str] = []

    async def holder(name: str, hold: float) -> None:
        async with file_lock(lock, on_wait=lambda: waited.append(name), poll_interval=0.01):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    first = asyncio.create_task(holder("a", 0.1))
    await asyncio.sleep(0.02)
    await holder("b", 0)
    await first

    assert order == ["a in", "a out", "b in", "b out"]
    assert waited == ["b"]


async def test_lock_is_released_on_error(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    try:
        async with file_lock(lock):
            raise RuntimeError("boom")
    except RuntimeError:
        pass

    async with asyncio.timeout(1):
        async with file_lock(lock):
            pass


async def test_cancelled_waiter_does_not_keep_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    async with file_lock(lock):
        waiter = asyncio.create_task(_enter(lock))
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)

    async with asyncio.timeout(1):
        async with file_lock(lock):
            pass


async def test_lock_excludes_other_processes(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    script = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(0.4)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "locked"
        started = time.monotonic()
        async with file_lock(lock, poll_interval=0.01):
            waited = time.monotonic() - started
        assert waited > 0.2
    finally:
        other.wait(timeout=5)


async def test_lock_creates_its_directory(tmp_path: Path) -> None:
    async with file_lock(tmp_path / "a" / "b" / "x.lock"):
        assert (tmp_path / "a" / "b" / "x.lock").exists()


async def _enter(lock: Path) -> None:
    async with file_lock(lock, poll_interval=0.01):
        pass
