"""Building the OCI runtime spec (config.json) of a sandbox and the process JSON of an exec.

Pure functions over dataclasses: everything here is unit-tested without root.

The sandbox's PID 1 is catatonit in pause mode, bind-mounted read-only from
the host, so an image needs no init of its own and cannot swap ours. Every
command then enters through the runtime's ``exec``. User namespaces,
seccomp and veth networking come later: the network namespace can already
be an existing one (``netns_path``), and nothing here assumes host uids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbox.agent.runtime.base import ProcessSpec
from qbox.agent.users import UserInfo
from qbox.core.errors import ValidationError

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_IN_SANDBOX = "/.qbox/init"
CPU_PERIOD_US = 100_000
CGROUP_PARENT = "/qbox"
MIB = 1024 * 1024

# Docker's default capability set: what "root in a container" has by default.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
)

# None by default: processes inherit the agent's limits. Raising a hard
# limit needs CAP_SYS_RESOURCE, which an agent run in a restricted host
# container lacks (measured: setrlimit EPERM above the inherited 20000).
DEFAULT_RLIMITS: dict[str, tuple[int, int]] = {}

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


def oci_process(spec: ProcessSpec) -> dict[str, Any]:
    """The OCI ``process`` object for ``spec`` (config.json's, or ``exec --process``'s)."""
    caps = list(spec.capabilities)
    user: dict[str, Any] = {"uid": spec.uid, "gid": spec.gid}
    if spec.additional_gids:
        user["additionalGids"] = list(spec.additional_gids)
    return {
        "terminal": False,
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
    )


def init_process(config: SandboxConfig) -> ProcessSpec:
    return ProcessSpec(
        args=[INIT_IN_SANDBOX, "-P"],
        env={"PATH": DEFAULT_PATH, **config.env},
        cwd="/",
        uid=0,
        gid=0,
        capabilities=DEFAULT_CAPABILITIES,
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
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": INIT_IN_SANDBOX, "type": "bind", "source": str(config.init_source),
         "options": ["bind", "ro", "nosuid", "nodev"]},
        *_network_mounts(config),
    ]


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
        "memory": {"limit": config.memory_mb * MIB},
        "pids": {"limit": config.pids_limit},
    }


def _namespaces(config: SandboxConfig) -> list[dict[str, str]]:
    network: dict[str, str] = {"type": "network"}
    if config.netns_path is not None:
        network["path"] = str(config.netns_path)
    # cgroup: the sandbox sees its own cgroup as the root, not the host's hierarchy.
    return [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"},
            {"type": "cgroup"}, network]


def oci_config(config: SandboxConfig) -> dict[str, Any]:
    """The full config.json for a sandbox."""
    if config.vcpus < 1 or config.memory_mb < 1 or config.pids_limit < 1:
        raise ValueError("vcpus, memory and pids limits must be positive")
    return {
        "ociVersion": OCI_VERSION,
        "process": oci_process(init_process(config)),
        "root": {"path": str(config.rootfs), "readonly": False},
        "hostname": config.hostname,
        "mounts": _mounts(config),
        "linux": {
            "cgroupsPath": f"{CGROUP_PARENT}/{config.id}",
            "namespaces": _namespaces(config),
            "resources": _resources(config),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def identity_files(hostname: str) -> dict[str, bytes]:
    """/etc/hostname and /etc/hosts naming the sandbox, seeded into its writable layer."""
    hosts = (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{hostname}\n"
    )
    return {"etc/hostname": f"{hostname}\n".encode(), "etc/hosts": hosts.encode()}
