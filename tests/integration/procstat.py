"""What a running `qbox up` uses: its control plane's and its agent's memory and files."""

from __future__ import annotations

import os
from pathlib import Path

from tests.qbox_process import QboxUp


def agent_pid(up: QboxUp) -> int:
    """The host agent `qbox up` started (its child running ``qbox agent``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == up.process.pid and b"agent" in cmdline:
            return int(entry.name)
    raise LookupError(f"no agent under qbox up (pid {up.process.pid})")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for {pid}")


def open_sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return count
