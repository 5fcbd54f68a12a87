"""The agent's capacity report (``/health``): real numbers of this machine, and sandbox disks
counted by the space they take, not their sparse size."""

from __future__ import annotations

import os
from pathlib import Path

from qbox.agent.capacity import host_capacity

MIB = 1024 * 1024


def test_the_report_is_this_hosts(tmp_path: Path) -> None:
    report = host_capacity(tmp_path, tmp_path / "sandboxes")
    disk = os.statvfs(tmp_path)
    assert report["vcpus"] == len(os.sched_getaffinity(0))
    assert report["memoryMb"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    assert report["diskTotalMb"] == disk.f_blocks * disk.f_frsize // MIB
    assert abs(report["diskFreeMb"] - disk.f_bavail * disk.f_frsize // MIB) < 64  # other writers
    assert report["sandboxDisksMb"] == 0


def test_sandbox_disks_count_what_they_hold(tmp_path: Path) -> None:
    for name, written in (("sb_a", 3), ("sb_b", 2)):
        image = tmp_path / "sandboxes" / name / "disk.img"
        image.parent.mkdir(parents=True)
        with image.open("wb") as f:
            f.truncate(1024 * MIB)  # sparse: 1 GiB that takes nothing
            f.write(b"x" * written * MIB)
            f.flush()
            os.fsync(f.fileno())
    (tmp_path / "sandboxes" / "sb_c").mkdir()  # a sandbox without a disk yet
    assert host_capacity(tmp_path, tmp_path / "sandboxes")["sandboxDisksMb"] == 5
