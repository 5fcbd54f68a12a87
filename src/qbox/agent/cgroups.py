"""Reading a sandbox's cgroup: how often the OOM killer struck it, whether swap is accounted.

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
    return [base / relative for base in (root, *root.iterdir()) if (base / relative).is_dir()]


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
