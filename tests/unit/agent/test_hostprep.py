from __future__ import annotations

from qbox.agent import hostprep, mounts

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"


def _layout(text: str) -> hostprep.CgroupLayout:
    return hostprep.detect_layout(mounts.parse_mountinfo(text))


def test_detects_hybrid_v2_and_v1() -> None:
    assert _layout(HYBRID) == hostprep.CgroupLayout(hostprep.CgroupMode.HYBRID,
                                                    "/sys/fs/cgroup/unified")
    assert _layout(V2).mode is hostprep.CgroupMode.V2
    assert _layout(V1).mode is hostprep.CgroupMode.V1
    assert _layout("").mode is hostprep.CgroupMode.NONE


def test_controllers_on_the_unified_mount_of_a_hybrid_host_are_moved() -> None:
    assert hostprep.controllers_to_move(_layout(HYBRID), "hugetlb\n") == ["hugetlb"]


def test_nothing_to_do_once_fixed_or_on_pure_hosts() -> None:
    assert hostprep.controllers_to_move(_layout(HYBRID), "\n") == []
    assert hostprep.controllers_to_move(_layout(V2), "cpu memory pids\n") == []
    assert hostprep.controllers_to_move(_layout(V1), "") == []


def test_mountinfo_escapes_are_decoded() -> None:
    line = r"50 23 0:40 / /data/with\040space rw - overlay overlay rw,lowerdir=/a"
    (entry,) = mounts.parse_mountinfo(line)
    assert entry.mount_point == "/data/with space"
    assert entry.fstype == "overlay"
