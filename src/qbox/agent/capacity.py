"""What this host can give sandboxes, reported in ``/health`` for the control plane's admission.

CPUs are the ones this process may run on (a cpuset narrows them), memory the
physical RAM, and the disk the filesystem of the data dir: the sandboxes'
sparse disk images live there, next to images and everything else. What the
images already hold is reported too: their sandboxes' reservations cover it,
so the control plane adds it back to the free space instead of counting it twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_MIB = 1024 * 1024
_BLOCK = 512  # st_blocks unit


def host_capacity(data_dir: Path, sandboxes_dir: Path) -> dict[str, int]:
    disk = os.statvfs(data_dir)
    return {
        "vcpus": len(os.sched_getaffinity(0)),
        "memoryMb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // _MIB,
        "diskTotalMb": disk.f_blocks * disk.f_frsize // _MIB,
        # What an unprivileged writer may still use (root's reserve is not ours to promise).
        "diskFreeMb": disk.f_bavail * disk.f_frsize // _MIB,
        "sandboxDisksMb": _allocated(sandboxes_dir.glob("*/disk.img")) // _MIB,
    }


def _allocated(images: Iterable[Path]) -> int:
    total = 0
    for image in images:
        try:
            total += image.stat().st_blocks * _BLOCK
        except FileNotFoundError:
            continue  # its sandbox went away meanwhile
    return total
