"""Reading a sandbox's cgroup: how often the OOM killer struck it, whether swap is accounted.

The runtime creates the cgroup from the spec's ``cgroupsPath`` (``/qbox/<id>``,
or ``/qbox-<tag>/<id>`` for an agent on another data dir: host_names.py),
under each v1 hierarchy (``/sys/fs/cgroup/memory/qbox/<id>``) or in the v2
tree (``/sys/fs/cgroup/qbox/<id>``). Both count OOM kills: v1 in
``memory.oom_control`` (``oom_kill N``, Linux ≥ 4.13), v2 in ``memory.events``.
"""

from __future__ import annotations

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
