"""Building the OCI runtime spec (config.json) of a sandbox and the process JSON of an exec.

Pure functions over dataclasses: everything here is unit-tested without root.

The sandbox's PID 1 is catatonit in pause mode, bind-mounted read-only from
the host, so an image needs no init of its own and cannot swap ours. Every
command then enters through the runtime's ``exec``.

Isolation (docs/isolation.md): with ``id_mapping`` the sandbox gets its own
user namespace (root inside is an unprivileged uid range on the host), with
``seccomp`` a syscall allowlist (``seccomp.py``); every process has
``noNewPrivileges``, root Docker's default capabilities and everyone else
none. Memory and swap are limited together, so a sandbox cannot swap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbox.agent.idmap import IdMapping
from qbox.agent.runtime.base import ProcessSpec
from qbox.agent.users import UserInfo
from qbox.core.errors import ValidationError

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_IN_SANDBOX = "/.qbox/init"
# The code interpreter's in-sandbox scripts (interpreter/guest/), read-only.
GUEST_IN_SANDBOX = "/.qbox/guest"
CPU_PERIOD_US = 100_000
CGROUP_PARENT = "/qbox"
MIB = 1024 * 1024

# Docker's default capability set: what "root in a container" has by default.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
)

# None by default: processes inherit the agent's limits; ``sandbox_rlimits``
# gives the ones the sandbox manager sets.
DEFAULT_RLIMITS: dict[str, tuple[int, int]] = {}
NOFILE_LIMIT = 65_536
# crun's annotation for a precompiled seccomp filter (see seccomp_bpf.py).
SECCOMP_BPF_ANNOTATION = "run.oci.seccomp_bpf_data"

# Docker's defaults: kernel interfaces that leak host data or allow host-wide
# changes are hidden (masked) or frozen (read-only).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

# Character devices a sandbox may use: (major, minor or None for all).
_ALLOWED_DEVICES: tuple[tuple[int, int | None], ...] = (
    (1, 3), (1, 5), (1, 7), (1, 8), (1, 9),  # null zero full random urandom
    (5, 0), (5, 1), (5, 2),                  # tty console ptmx
    (136, None),                             # /dev/pts/*
)


@dataclass(frozen=True)
class SandboxConfig:
    id: str
    # Directly inside the bundle (the directory holding config.json).
    rootfs: Path
    hostname: str
    init_source: Path
    vcpus: int
    memory_mb: int
    pids_limit: int = 4096
    env: dict[str, str] = field(default_factory=dict)
    # An existing network namespace to join; None → a new, empty one (loopback only).
    netns_path: Path | None = None
    # The network's per-sandbox resolv.conf, bind-mounted read-only; None → the image's.
    resolv_conf: Path | None = None
    # --- isolation ---
    # A user namespace with this mapping; None → the host's ids (no user namespace).
    id_mapping: IdMapping | None = None
    # The OCI ``linux.seccomp`` profile; None → no filter.
    seccomp: dict[str, Any] | None = None
    # The same profile compiled (``seccomp_bpf.py``), for crun to load as is.
    seccomp_bpf: str | None = None
    # Limits of the init (each command gets its own, see ``exec_process``).
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    # A sysfs mounted for the sandbox by the agent (``joined_netns.py``), bound
    # read-only at /sys; None → the runtime mounts a fresh one.
    sysfs_source: Path | None = None
    # Limit memory+swap to the memory limit (the host must account swap).
    no_swap: bool = False
    # The host directory bound read-only at GUEST_IN_SANDBOX; None → no such mount.
    guest_source: Path | None = None
    # The agent's own cgroup subtree (host_names.py): the sandbox's is <parent>/<id>.
    cgroup_parent: str = CGROUP_PARENT


def sandbox_rlimits(host_nofile_hard: int, wanted_nofile: int = NOFILE_LIMIT
                    ) -> dict[str, tuple[int, int]]:
    """The rlimits of every sandbox process.

    Open files: ``wanted_nofile``, but never above the agent's own hard
    limit — raising a hard limit needs CAP_SYS_RESOURCE in the host's user
    namespace, which the runtime does not have inside the sandbox's (and an
    agent run in a restricted host container lacks; measured: EPERM above
    the inherited 20000). Core dumps: none, so that a crash in a sandbox
    never reaches the host's ``core_pattern`` handler.
    (No RLIMIT_NPROC: it counts per host uid, which all sandboxes share;
    the pids cgroup limits processes per sandbox.)
    """
    nofile = wanted_nofile if host_nofile_hard < 0 else min(wanted_nofile, host_nofile_hard)
    return {"RLIMIT_NOFILE": (nofile, nofile), "RLIMIT_CORE": (0, 0)}


def oci_process(spec: ProcessSpec) -> dict[str, Any]:
    """The OCI ``process`` object for ``spec`` (config.json's, or ``exec --process``'s)."""
    caps = list(spec.capabilities)
    user: dict[str, Any] = {"uid": spec.uid, "gid": spec.gid}
    if spec.additional_gids:
        user["additionalGids"] = list(spec.additional_gids)
    document: dict[str, Any] = {
        "terminal": spec.terminal,
        "user": user,
        "args": list(spec.args),
        "env": [f"{key}={value}" for key, value in spec.env.items()],
        "cwd": spec.cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
            # Inheritable/ambient stay empty so exec'd binaries never gain caps.
            "inheritable": [], "ambient": [],
        },
        "rlimits": [
            {"type": name, "soft": soft, "hard": hard}
            for name, (soft, hard) in {**DEFAULT_RLIMITS, **spec.rlimits}.items()
        ],
        "noNewPrivileges": spec.no_new_privileges,
    }
    if spec.terminal and spec.console_size is not None:
        size = spec.console_size
        document["consoleSize"] = {"height": size.rows, "width": size.cols}
    return document


def check_env(env: dict[str, str], field_name: str) -> dict[str, str]:
    """Reject names the kernel's ``KEY=VALUE`` strings cannot carry."""
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValidationError.for_fields(
                {f"{field_name}.{key}": "environment names must be non-empty, without '=' "
                                        "or NUL; values without NUL"})
    return env


def exec_process(
    user: UserInfo,
    argv: list[str],
    *,
    image_env: dict[str, str] | None = None,
    sandbox_env: dict[str, str] | None = None,
    call_env: dict[str, str] | None = None,
    cwd: str | None = None,
    rlimits: dict[str, tuple[int, int]] | None = None,
) -> ProcessSpec:
    """The process of a command: who, where, and with which environment.

    Environment, later entries winning: a default PATH, the image's Env, the
    user's HOME/USER/LOGNAME, the sandbox's envs, the call's env.
    """
    if not argv or not argv[0]:
        raise ValidationError.for_fields({"cmd": "a command is required"})
    if any("\0" in arg for arg in argv):
        raise ValidationError.for_fields({"args": "arguments cannot contain NUL"})
    if cwd is not None and (not cwd.startswith("/") or "\0" in cwd):
        raise ValidationError.for_fields({"cwd": "cwd must be an absolute path"})
    env = {"PATH": DEFAULT_PATH, **(image_env or {}),
           "HOME": user.home, "USER": user.name, "LOGNAME": user.name,
           **check_env(sandbox_env or {}, "envs"), **check_env(call_env or {}, "env")}
    return ProcessSpec(
        args=list(argv),
        env=env,
        cwd=cwd or user.home,
        uid=user.uid,
        gid=user.gid,
        additional_gids=user.additional_gids,
        # Root in the sandbox gets Docker's default set; anyone else nothing,
        # and noNewPrivileges keeps setuid binaries from handing any back.
        capabilities=DEFAULT_CAPABILITIES if user.uid == 0 else (),
        rlimits=dict(rlimits or {}),
    )


def init_process(config: SandboxConfig) -> ProcessSpec:
    return ProcessSpec(
        args=[INIT_IN_SANDBOX, "-P"],
        env={"PATH": DEFAULT_PATH, **config.env},
        cwd="/",
        uid=0,
        gid=0,
        capabilities=DEFAULT_CAPABILITIES,
        rlimits=dict(config.rlimits),
    )


def _mounts(config: SandboxConfig) -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        _sysfs_mount(config),
        {"destination": INIT_IN_SANDBOX, "type": "bind", "source": str(config.init_source),
         "options": ["bind", "ro", "nosuid", "nodev"]},
        *_guest_mounts(config),
        *_network_mounts(config),
    ]


def _guest_mounts(config: SandboxConfig) -> list[dict[str, Any]]:
    if config.guest_source is None:
        return []
    # noexec too: the image's python3 runs the scripts by reading them.
    return [{"destination": GUEST_IN_SANDBOX, "type": "bind", "source": str(config.guest_source),
             "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}]


def _sysfs_mount(config: SandboxConfig) -> dict[str, Any]:
    if config.sysfs_source is not None:
        return {"destination": "/sys", "type": "bind", "source": str(config.sysfs_source),
                "options": ["bind", "ro", "nosuid", "noexec", "nodev"]}
    return {"destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]}


def _network_mounts(config: SandboxConfig) -> list[dict[str, Any]]:
    if config.resolv_conf is None:
        return []
    return [{"destination": "/etc/resolv.conf", "type": "bind", "source": str(config.resolv_conf),
             "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}]


def _resources(config: SandboxConfig) -> dict[str, Any]:
    devices: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for major, minor in _ALLOWED_DEVICES:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        devices.append(rule)
    return {
        "devices": devices,
        "cpu": {"period": CPU_PERIOD_US, "quota": config.vcpus * CPU_PERIOD_US},
        # swap is memory+swap: equal to the limit means no swap at all.
        "memory": {"limit": config.memory_mb * MIB,
                   **({"swap": config.memory_mb * MIB} if config.no_swap else {})},
        "pids": {"limit": config.pids_limit},
    }


def _namespaces(config: SandboxConfig) -> list[dict[str, str]]:
    network: dict[str, str] = {"type": "network"}
    if config.netns_path is not None:
        network["path"] = str(config.netns_path)
    # cgroup: the sandbox sees its own cgroup as the root, not the host's hierarchy.
    namespaces = [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"},
                  {"type": "cgroup"}, network]
    if config.id_mapping is not None:
        namespaces.append({"type": "user"})
    return namespaces


def _root_path(config: SandboxConfig) -> str:
    # In a user namespace the runtime resolves an absolute rootfs path as the
    # sandbox's root, which may not search the agent's 0700 directories
    # (EACCES). A path relative to the bundle (the rootfs's parent directory)
    # is resolved from the bundle the runtime has already entered.
    return config.rootfs.name if config.id_mapping is not None else str(config.rootfs)


def oci_config(config: SandboxConfig) -> dict[str, Any]:
    """The full config.json for a sandbox."""
    if config.vcpus < 1 or config.memory_mb < 1 or config.pids_limit < 1:
        raise ValueError("vcpus, memory and pids limits must be positive")
    linux: dict[str, Any] = {
        "cgroupsPath": f"{config.cgroup_parent}/{config.id}",
        "namespaces": _namespaces(config),
        "resources": _resources(config),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if config.id_mapping is not None:
        linux["uidMappings"] = config.id_mapping.oci()
        linux["gidMappings"] = config.id_mapping.oci()
    if config.seccomp is not None:
        linux["seccomp"] = config.seccomp
    document: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": oci_process(init_process(config)),
        "root": {"path": _root_path(config), "readonly": False},
        "hostname": config.hostname,
        "mounts": _mounts(config),
        "linux": linux,
    }
    if config.seccomp is not None and config.seccomp_bpf is not None:
        document["annotations"] = {SECCOMP_BPF_ANNOTATION: config.seccomp_bpf}
    return document


def identity_files(hostname: str) -> dict[str, bytes]:
    """/etc/hostname and /etc/hosts naming the sandbox, seeded into its writable layer."""
    hosts = (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{hostname}\n"
    )
    return {"etc/hostname": f"{hostname}\n".encode(), "etc/hosts": hosts.encode()}
