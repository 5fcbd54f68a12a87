"""What this host uses right now, measured (not reserved): CPU, memory, the data dir's disk.

The control plane shows these beside its own reservations (``GET /v1/hosts``). Reading them
is a few small reads of /proc and one ``statvfs``: cheap, but file IO all the same, so
callers on the event loop run ``UsageMeter.measure`` in a thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from qbox.protocol.host import Usage

_MIB = 1024 * 1024
# /proc/stat's "cpu" columns that are not busy time: idle and iowait. guest and guest_nice
# are already counted in user and nice, so they are left out of the total.
_IDLE_COLUMNS = (3, 4)
_COUNTED_COLUMNS = 8


def cpu_times(proc_stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the text of /proc/stat."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(value) for value in fields[1:1 + _COUNTED_COLUMNS]]
            idle = sum(ticks[i] for i in _IDLE_COLUMNS if i < len(ticks))
            return sum(ticks) - idle, sum(ticks)
    raise ValueError("/proc/stat has no cpu line")


def memory_used_mb(meminfo: str) -> int:
    """MemTotal - MemAvailable of /proc/meminfo's text, in MiB: what the kernel could not
    hand out without swapping (page cache it can drop is not "used")."""
    values: dict[str, int] = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            values[name] = int(rest.split()[0])  # kB
    return (values["MemTotal"] - values["MemAvailable"]) // 1024


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """CPU busy between two samples, 0–100 across all CPUs (0 when no time passed)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    return round(min(max(100.0 * busy / total, 0.0), 100.0), 1)


class UsageMeter:
    """Measures usage; CPU is the busy share since the previous measure (since boot for
    the first), so one heartbeat's figure covers the interval since the last one."""

    def __init__(self, data_dir: Path, proc: Path = Path("/proc")) -> None:
        self._data_dir = data_dir
        self._proc = proc
        self._previous: tuple[int, int] = (0, 0)
        # /health and the heartbeat may measure at once, each in a worker thread.
        self._lock = threading.Lock()

    def measure(self) -> Usage:
        """Blocking (file reads): call it in a thread from the event loop."""
        with self._lock:
            now = cpu_times((self._proc / "stat").read_text())
            cpu = busy_percent(self._previous, now)
            self._previous = now
        disk = os.statvfs(self._data_dir)
        return Usage(cpu_percent=cpu,
                     memory_used_mb=memory_used_mb((self._proc / "meminfo").read_text()),
                     disk_used_mb=(disk.f_blocks - disk.f_bfree) * disk.f_frsize // _MIB,
                     disk_total_mb=disk.f_blocks * disk.f_frsize // _MIB)
