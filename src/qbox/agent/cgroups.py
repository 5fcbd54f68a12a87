"""A sandbox's cgroup: how often the OOM killer struck it, whether swap is accounted, its
limits changed after boot (a pooled sandbox's claim), and its removal.

The runtime creates the cgroup from the spec's ``cgroupsPath`` (``/qbox/<id>``,
or ``/qbox-<tag>/<id>`` for an agent on another data dir: host_names.py),
under each v1 hierarchy (``/sys/fs/cgroup/memory/qbox/<id>``) or in the v2
tree (``/sys/fs/cgroup/qbox/<id>``). Both count OOM kills: v1 in
``memory.oom_control`` (``oom_kill N``, Linux ≥ 4.13), v2 in ``memory.events``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def parse_counter(text: str, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed cgroup file (``name value`` lines)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _memory_files(cgroup_path: str, root: Path) -> list[Path]:
    relative = cgroup_path.strip("/")
    return [root / "memory" / relative / "memory.oom_control", root / relative / "memory.events"]


def oom_kills(cgroup_path: str, root: Path = CGROUP_ROOT) -> int | None:
    """Processes the OOM killer has killed in the cgroup so far; None if it cannot be read
    (no such cgroup, or a runtime that keeps its processes elsewhere)."""
    for path in _memory_files(cgroup_path, root):
        try:
            text = path.read_text()
        except OSError:
            continue
        return parse_counter(text, "oom_kill")
    return None


def swap_accounted(root: Path = CGROUP_ROOT) -> bool:
    """Whether the memory controller can limit swap (v1 ``memsw``; v2 ``memory.swap.max``)."""
    if (root / "memory" / "memory.memsw.limit_in_bytes").exists():
        return True
    if (root / "cgroup.controllers").exists():
        return any(root.glob("*/memory.swap.max"))
    return False


def remove_parent(parent: str, root: Path = CGROUP_ROOT) -> None:
    """Remove the agent's cgroup subtree (``/qbox-<tag>``) in each hierarchy where it is empty.

    A subtree that still holds a sandbox's cgroup (one left running, or another
    runtime's) refuses the rmdir and stays: this never touches a live sandbox.
    """
    relative = parent.strip("/")
    for directory in (root / relative, *root.glob(f"*/{relative}")):
        try:
            directory.rmdir()
        except OSError:
            continue


def _hierarchies(relative: str, root: Path) -> list[Path]:
    """The cgroup's directory in v2's tree and in each v1 hierarchy, where it exists."""
    if not relative or not root.is_dir():
        return []
    found: dict[Path, Path] = {}
    for base in (root, *sorted(root.iterdir())):
        if (base / relative).is_dir():
            # v1's cpu and cpuacct are one hierarchy under two names: listed once.
            found.setdefault((base / relative).resolve(), base / relative)
    return list(found.values())


def _members(directory: Path) -> list[int]:
    """Every process in the cgroup and its descendants."""
    pids: list[int] = []
    for procs in directory.rglob("cgroup.procs"):
        try:
            pids += [int(line) for line in procs.read_text().split()]
        except (OSError, ValueError):
            continue
    return pids


def _freeze(directory: Path, frozen: bool) -> None:
    """Freeze (or thaw) the cgroup: v2's ``cgroup.freeze`` or v1's freezer, whichever it has."""
    for name, value in (("cgroup.freeze", "1" if frozen else "0"),
                        ("freezer.state", "FROZEN" if frozen else "THAWED")):
        try:
            (directory / name).write_text(value)
        except OSError:
            continue


def remove_sandbox(cgroups_path: str, *, timeout: float = 10.0,
                   root: Path = CGROUP_ROOT) -> bool:
    """Remove a sandbox's cgroup in every hierarchy, killing what is still in it.

    The runtime's own delete removes it as a rule; this is the net under it. A
    fork bomb refills a cgroup between reading its members and killing them, so
    the cgroup is frozen first (nothing in it can fork while frozen), every
    member is killed, and it is thawed so the kills land. True when nothing is
    left; False if the cgroup still stands after ``timeout`` seconds.
    """
    relative = cgroups_path.strip("/")
    deadline = time.monotonic() + timeout
    while True:
        directories = _hierarchies(relative, root)
        if not directories:
            return True
        if any(_members(directory) for directory in directories):
            for directory in directories:
                _freeze(directory, True)
            for pid in {pid for directory in directories for pid in _members(directory)}:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for directory in directories:
                _freeze(directory, False)
        for directory in directories:
            for child in sorted((p for p in directory.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()
        if time.monotonic() >= deadline:
            return not _hierarchies(relative, root)
        time.sleep(0.05)


# v1 writes this for "no limit" (the largest page-aligned value).
_V1_UNLIMITED = 9223372036854771712
CPU_PERIOD_FALLBACK_US = 100_000


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def set_memory_limit(cgroups_path: str, memory_mb: int, root: Path = CGROUP_ROOT) -> list[Path]:
    """The sandbox's memory limit, in every hierarchy that has one (v1 ``memory`` or v2).

    Swap is left as the boot set it: v1's ``memsw`` (memory+swap) follows the limit when
    it was set (a sandbox that may not swap stays so), v2's ``memory.swap.max`` is apart
    from ``memory.max``. Lowering below what the sandbox uses makes the kernel reclaim (v1
    refuses with EBUSY when it cannot, raised as OSError); returns the files written.
    """
    limit = str(memory_mb * 1024 * 1024)
    written: list[Path] = []
    for directory in _hierarchies(cgroups_path.strip("/"), root):
        v1 = directory / "memory.limit_in_bytes"
        if v1.is_file():
            memsw = directory / "memory.memsw.limit_in_bytes"
            order = [v1]
            if memsw.is_file() and _read_int(memsw) not in (None, _V1_UNLIMITED):
                # memory+swap may never be below memory: a shrinking limit goes first,
                # a growing one after memsw.
                shrinks = int(limit) <= (_read_int(v1) or 0)
                order = [v1, memsw] if shrinks else [memsw, v1]
            for path in order:
                path.write_text(limit)
                written.append(path)
        v2 = directory / "memory.max"
        if v2.is_file():
            v2.write_text(limit)
            written.append(v2)
    return written


def set_cpu_limit(cgroups_path: str, vcpus: int, root: Path = CGROUP_ROOT) -> list[Path]:
    """The sandbox's CPU quota, ``vcpus`` CPUs per period, as the boot set it (v1
    ``cpu.cfs_quota_us``, v2 ``cpu.max``); the period stays. Returns the files written."""
    written: list[Path] = []
    for directory in _hierarchies(cgroups_path.strip("/"), root):
        v1 = directory / "cpu.cfs_quota_us"
        if v1.is_file():
            period = _read_int(directory / "cpu.cfs_period_us") or CPU_PERIOD_FALLBACK_US
            v1.write_text(str(vcpus * period))
            written.append(v1)
        v2 = directory / "cpu.max"
        if v2.is_file():
            try:
                period = int(v2.read_text().split()[1])
            except (OSError, ValueError, IndexError):
                period = CPU_PERIOD_FALLBACK_US
            v2.write_text(f"{vcpus * period} {period}")
            written.append(v2)
    return written
