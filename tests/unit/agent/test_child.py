from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from qbox.agent.runtime.base import ExitStatus
from qbox.agent.runtime.child import AdoptedChild, OrphanReaper, namespace_pid, stale_zombies


async def test_adopted_child_reports_exit_code_and_signal() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(5)"])
    child = AdoptedChild(proc.pid)
    assert await asyncio.wait_for(child.wait(), 10) == ExitStatus(5)

    proc = subprocess.Popen(["sleep", "30"])
    child = AdoptedChild(proc.pid)
    child.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(child.wait(), 10) == ExitStatus(143, 15)
    child.send_signal(signal.SIGTERM)  # after exit: not an error


async def test_namespace_pid_of_a_host_process_is_its_pid() -> None:
    proc = subprocess.Popen(["sleep", "5"])
    try:
        assert namespace_pid(proc.pid) == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_only_zombies_that_stayed_for_the_settle_time_are_stale() -> None:
    first_seen = {1: 10.0, 2: 10.0, 3: 11.5}
    assert stale_zombies(first_seen, {2, 3, 4}, now=12.0, settle=2.0) == {2}
    assert stale_zombies({}, {2, 3}, now=12.0, settle=2.0) == set()


def _wait_zombie(pid: int) -> None:
    for _ in range(500):
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rpartition(")")[2].split()[0] == "Z":
                return
        time.sleep(0.01)
    raise AssertionError(f"{pid} never exited")


def test_orphan_reaper_reaps_only_zombies_that_stayed() -> None:
    proc = subprocess.Popen(["true"])
    _wait_zombie(proc.pid)
    reaper = OrphanReaper(settle=2.0)
    assert proc.pid not in reaper.sweep(now=100.0)  # first sighting: maybe someone will wait
    assert proc.pid not in reaper.sweep(now=100.5)  # back to back is not enough
    assert proc.pid in reaper.sweep(now=102.0)
    assert not os.path.exists(f"/proc/{proc.pid}")


async def test_orphan_reaper_leaves_watched_children_alone() -> None:
    proc = subprocess.Popen(["true"])
    _wait_zombie(proc.pid)
    child = AdoptedChild(proc.pid)
    reaper = OrphanReaper()
    reaper.sweep(now=100.0)
    assert reaper.sweep(now=200.0) == set()
    assert await asyncio.wait_for(child.wait(), 5) == ExitStatus(0)
