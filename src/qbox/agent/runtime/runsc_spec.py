"""What runsc is given: the sandbox's spec adapted for gVisor, and a way in for its gofer.

Pure functions over the spec dict, except ``grant_search`` and
``is_real_directory``, which look at the host's directories (the former
adds an ACL entry to some). The driver is ``runsc.py``.
"""

from __future__ import annotations

import copy
import errno
import os
import stat
import struct
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
# What one task (a thread or process) costs the sentry, measured with a fork bomb of
# shells (about 1.8 MiB each, growing slowly while it runs), with room to spare.
SENTRY_BYTES_PER_TASK = 3 * MIB
# The sentry's own memory before any task (about 12 MiB measured), with room to spare.
SENTRY_BASE_BYTES = 32 * MIB
MIN_TASKS = 16


def network_mode(config: dict[str, Any]) -> str:
    """``host`` in the network namespace the spec joins; ``none`` (loopback only) without one."""
    for namespace in config.get("linux", {}).get("namespaces", []):
        if namespace.get("type") == "network" and namespace.get("path"):
            return "host"
    return "none"


def rootfs_of(config: dict[str, Any], bundle: Path) -> Path:
    """The rootfs on the host (a relative ``root.path`` is relative to the bundle)."""
    return bundle / str(config["root"]["path"])  # an absolute path wins over the bundle


def spec_for_runsc(config: dict[str, Any], bundle: Path, *, bind_tmp: bool) -> dict[str, Any]:
    """The sandbox's config.json as gVisor should get it.

    - ``linux.seccomp`` goes: runsc applies an OCI profile only to the
      container's init, never to ``runsc exec`` commands, and gVisor's own
      kernel is the syscall boundary (its host-side filters are its own).
    - ``/tmp``: with no mount there, gVisor puts a private tmpfs on an empty
      /tmp, which the files API could not see; ``bind_tmp`` mounts the
      rootfs's own /tmp instead (the caller checks it is a real directory).
    - ``/sys`` is always gVisor's own sysfs: a bind of a host sysfs (what a
      user-namespaced crun sandbox gets, ``joined_netns.py``) would show
      the host's devices through the gofer.
    - ``RLIMIT_NPROC`` of the init (``tasks_limit``), which gVisor's kernel
      also gives every ``runsc exec`` command (it ignores the process's own
      rlimits there).
    Everything else is kept: runsc honours the mounts (init bind-mount
    included), rlimits, cgroup limits, namespaces and id mappings, and
    ignores what it has no use for (devices, masked and read-only paths).
    """
    adapted = copy.deepcopy(config)
    adapted.get("linux", {}).pop("seccomp", None)
    mounts = adapted.setdefault("mounts", [])
    for index, mount in enumerate(mounts):
        if mount.get("destination") == "/sys" and mount.get("type") != "sysfs":
            mounts[index] = {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                             "options": ["nosuid", "noexec", "nodev", "ro"]}
    if bind_tmp and not any(m.get("destination") == "/tmp" for m in mounts):
        mounts.append({"destination": "/tmp", "type": "bind",
                       "source": str(rootfs_of(adapted, bundle) / "tmp"),
                       "options": ["bind", "rw", "nosuid", "nodev"]})
    limit = tasks_limit(adapted)
    if limit is not None:
        process = adapted.setdefault("process", {})
        process["rlimits"] = [
            *(r for r in process.get("rlimits", []) if r.get("type") != "RLIMIT_NPROC"),
            {"type": "RLIMIT_NPROC", "soft": limit, "hard": limit}]
    return adapted


def tasks_limit(config: dict[str, Any]) -> int | None:
    """How many tasks each user may run in a gVisor sandbox: what its memory can hold.

    The spec's pids limit goes to the host's pids cgroup, which counts the
    sentry's own threads, never the sandbox's tasks; and gVisor's memory is
    one process in the memory cgroup, so a fork bomb that fills it makes the
    host kill the whole sandbox. gVisor's kernel counts tasks per user
    against ``RLIMIT_NPROC`` (root included, without CAP_SYS_RESOURCE) and
    answers EAGAIN past it, as the pids cgroup does under crun; sized so
    that the sentry's tasks fit in the memory limit, never above the pids
    limit. None: the spec limits neither.
    """
    resources = config.get("linux", {}).get("resources", {})
    bounds = []
    if pids := int(resources.get("pids", {}).get("limit") or 0):
        bounds.append(pids)
    if memory := int(resources.get("memory", {}).get("limit") or 0):
        bounds.append(max(MIN_TASKS, (memory - SENTRY_BASE_BYTES) // SENTRY_BYTES_PER_TASK))
    return min(bounds) if bounds else None


def sandbox_root_uid(config: dict[str, Any]) -> int | None:
    """The host uid of root in the sandbox's user namespace; None without one."""
    linux = config.get("linux", {})
    if not any(n.get("type") == "user" for n in linux.get("namespaces", [])):
        return None
    for mapping in linux.get("uidMappings", []):
        if mapping.get("containerID") == 0:
            return int(mapping["hostID"])
    return None


def paths_the_gofer_opens(config: dict[str, Any], bundle: Path) -> list[Path]:
    """The rootfs and the sources of bind mounts: what the gofer opens on the host."""
    paths = [rootfs_of(config, bundle)]
    paths += [Path(m["source"]) for m in config.get("mounts", [])
              if m.get("type") == "bind" and str(m.get("source", "")).startswith("/")]
    return paths


# POSIX ACL as the kernel stores it in the system.posix_acl_access xattr.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
_ACL_NO_ID = 0xFFFFFFFF
_SEARCH = 0o1


def acl_with_search_for(existing: bytes | None, mode: int, uid: int) -> bytes:
    """A directory's access ACL plus search (x) permission for ``uid``, mask widened to match."""
    entries: dict[tuple[int, int], int] = {}
    if existing:
        for offset in range(4, len(existing), 8):
            tag, perm, ident = struct.unpack_from("<HHI", existing, offset)
            entries[(tag, ident)] = perm
    else:
        entries = {(_ACL_USER_OBJ, _ACL_NO_ID): (mode >> 6) & 7,
                   (_ACL_GROUP_OBJ, _ACL_NO_ID): (mode >> 3) & 7,
                   (_ACL_OTHER, _ACL_NO_ID): mode & 7}
    entries[(_ACL_USER, uid)] = entries.get((_ACL_USER, uid), 0) | _SEARCH
    mask = 0
    for (tag, _), perm in entries.items():
        if tag in (_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP):
            mask |= perm
    entries[(_ACL_MASK, _ACL_NO_ID)] = mask
    body = b"".join(struct.pack("<HHI", tag, perm, ident)
                    for (tag, ident), perm in sorted(entries.items()))
    return struct.pack("<I", _ACL_VERSION) + body


def _searchable_by(info: os.stat_result, uid: int) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    return bool(info.st_mode & stat.S_IXOTH)


def grant_search(paths: list[Path], uid: int) -> None:
    """Let ``uid`` reach ``paths``: search permission on every directory above them.

    With a user namespace, runsc's gofer runs as the sandbox's root, an
    unprivileged uid on the host, and opens the rootfs and the bind sources
    itself (crun opens them as the host's root). The agent's directories are
    0700: an ACL entry gives that one uid search permission, nothing more
    (with the shared id range, every sandbox's root is that uid already).
    """
    done: set[Path] = set()
    for path in paths:
        for directory in path.parents:
            if directory in done or directory == Path("/"):
                continue
            done.add(directory)
            info = os.stat(directory)
            if _searchable_by(info, uid):
                continue
            try:
                existing = os.getxattr(directory, _ACL_XATTR)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                    raise
                existing = None
            try:
                os.setxattr(directory, _ACL_XATTR,
                            acl_with_search_for(existing, info.st_mode, uid))
            except OSError as exc:
                if exc.errno != errno.ENOTSUP:
                    raise
                os.chmod(directory, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)  # no ACLs here


def is_real_directory(path: Path) -> bool:
    # lstat: a symlink here would make runsc bind-mount a *host* path.
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
