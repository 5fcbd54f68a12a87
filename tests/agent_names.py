"""Removing what a test agent named after its data dir (host_names.py), for a failed test.

A test's data dir is never the default one, so its names carry a tag of their
own and everything so named is the test's: its nftables table, its sandboxes'
namespace pins and its cgroup parent. The default data dir's names (which a
real install on this machine may be using) are never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from qbox.agent.host_names import HostNames

CGROUP_ROOT = Path("/sys/fs/cgroup")


def scrub_names(data_dir: Path) -> None:
    names = HostNames.for_data_dir(data_dir)
    if not names.tag:
        return
    subprocess.run(["nft", "delete", "table", "inet", names.nft_table], capture_output=True)
    for pin in Path("/run/netns").glob(f"{names.netns_prefix}*"):
        subprocess.run(["ip", "netns", "delete", pin.name], capture_output=True)
    parent = names.cgroup_parent.strip("/")
    for top in (CGROUP_ROOT / parent, *CGROUP_ROOT.glob(f"*/{parent}")):
        for cgroup in sorted(top.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            kill_and_remove(cgroup)


def kill_and_remove(cgroup: Path) -> None:
    """SIGKILL what is left in a cgroup, then remove it (a non-empty one stays)."""
    procs = cgroup / "cgroup.procs"
    for pid in procs.read_text().split() if procs.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(OSError):
        cgroup.rmdir()
