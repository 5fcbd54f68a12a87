"""Preparing the host once per agent start so the OCI runtime can work.

On hybrid cgroup hosts (cgroup v1 hierarchies plus a cgroup2 mount at
``/sys/fs/cgroup/unified``) a controller left on the cgroup2 mount — here
``hugetlb`` — makes crun refuse every container ("cgroups in hybrid mode not
supported, drop all controllers from cgroupv2"). Mounting that controller as
its own v1 hierarchy moves it off cgroup2, after which crun works; the fix is
reversible with umount. Pure cgroup v1 and pure cgroup v2 hosts need nothing.

The decision (``controllers_to_move``) is pure and unit-tested; ``prepare_host``
applies it and is idempotent: once moved, the cgroup2 mount lists no
controllers and there is nothing left to do.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from qbox.agent import mounts

log = logging.getLogger("qbox.agent.hostprep")

CGROUP_ROOT = Path("/sys/fs/cgroup")


class CgroupMode(StrEnum):
    V1 = "v1"
    HYBRID = "hybrid"
    V2 = "v2"
    NONE = "none"


@dataclass(frozen=True)
class CgroupLayout:
    mode: CgroupMode
    unified_mount: str | None = None


@dataclass
class HostPreparation:
    layout: CgroupLayout
    moved_controllers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def detect_layout(entries: list[mounts.MountEntry]) -> CgroupLayout:
    v2 = [e.mount_point for e in entries if e.fstype == "cgroup2"]
    has_v1 = any(e.fstype == "cgroup" for e in entries)
    if v2 and has_v1:
        return CgroupLayout(CgroupMode.HYBRID, v2[0])
    if v2:
        return CgroupLayout(CgroupMode.V2, v2[0])
    return CgroupLayout(CgroupMode.V1 if has_v1 else CgroupMode.NONE)


def controllers_to_move(layout: CgroupLayout, unified_controllers: str) -> list[str]:
    """Controllers that must leave the cgroup2 mount for crun to accept the host."""
    if layout.mode is not CgroupMode.HYBRID:
        return []
    return sorted(set(unified_controllers.split()))


def _make_mount_point(target: Path) -> None:
    try:
        target.mkdir(exist_ok=True)
        return
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
    # systemd mounts the /sys/fs/cgroup tmpfs read-only in hybrid mode: open
    # it for the one mkdir, then close it again.
    parent = target.parent
    base = mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC
    mounts.mount("tmpfs", parent, None, mounts.MS_REMOUNT | base, "mode=755")
    try:
        target.mkdir(exist_ok=True)
    finally:
        mounts.mount("tmpfs", parent, None, mounts.MS_REMOUNT | base | mounts.MS_RDONLY,
                     "mode=755")


def prepare_host(cgroup_root: Path = CGROUP_ROOT) -> HostPreparation:
    """Make the host's cgroups acceptable to crun; report what was done and what failed."""
    layout = detect_layout(mounts.read_mountinfo())
    result = HostPreparation(layout)
    if layout.mode is not CgroupMode.HYBRID or layout.unified_mount is None:
        return result
    try:
        listed = Path(layout.unified_mount, "cgroup.controllers").read_text()
    except OSError as exc:
        result.problems.append(f"cannot read cgroup2 controllers: {exc}")
        return result
    for controller in controllers_to_move(layout, listed):
        target = cgroup_root / controller
        try:
            _make_mount_point(target)
            mounts.mount("cgroup", target, "cgroup", 0, controller)
        except OSError as exc:
            # EBUSY: the controller is enabled in some cgroup2 subtree; leave
            # the host alone and let the factory fall back to runc.
            result.problems.append(f"cannot move {controller} to cgroup v1: "
                                   f"{os.strerror(exc.errno or 0)}")
            continue
        log.info("moved cgroup controller %s from cgroup2 to %s", controller, target)
        result.moved_controllers.append(controller)
    return result
