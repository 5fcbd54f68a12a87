"""How this agent isolates and limits its sandboxes, decided once from its settings.

The sandbox manager asks this policy for each piece (docs/isolation.md):
the user namespace's id mapping, the seccomp profile, the rlimits, the
disk quota of the writable layer, what a joined network namespace needs,
the cgroup subtree sandboxes live in and how to read their OOM kills. A runtime that isolates nothing
(the fake) gets ``NO_ISOLATION``, the policy that asks for none of it.
"""

from __future__ import annotations

import os
import resource
import signal as signals
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from qbox.agent import cgroups, joined_netns, seccomp, seccomp_bpf
from qbox.agent import spec as specs
from qbox.agent.host_names import HostNames
from qbox.agent.idmap import IdMapping
from qbox.agent.rootfs import LayerOptions
from qbox.agent.runtime.base import ExitStatus, RuntimeCapability, RuntimeDriver
from qbox.agent.settings import AgentSettings

# exitReason of a sandbox whose init the OOM killer took (docs/agent-protocol.md).
OOM_EXIT_REASON = "oom"


@dataclass(frozen=True)
class IsolationPolicy:
    mapping: IdMapping | None = None
    seccomp: dict[str, Any] | None = None
    seccomp_bpf: str | None = None
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    no_swap: bool = False
    # None → no disk quota.
    default_disk_mb: int | None = None
    # This agent's own subtree of the cgroup tree (host_names.py).
    cgroup_parent: str = specs.CGROUP_PARENT

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> IsolationPolicy:
        profile = seccomp.default_profile() if settings.seccomp else None
        return cls(
            mapping=IdMapping(settings.userns_base) if settings.userns_base else None,
            seccomp=profile,
            seccomp_bpf=seccomp_bpf.compile_profile(profile) if profile is not None else None,
            rlimits=specs.sandbox_rlimits(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            no_swap=cgroups.swap_accounted(),
            default_disk_mb=settings.default_disk_mb if settings.disk_quota else None,
            cgroup_parent=HostNames.for_data_dir(settings.data_dir).cgroup_parent,
        )

    def layer_options(self, disk_size_mb: int | None) -> LayerOptions:
        size = disk_size_mb if disk_size_mb is not None else self.default_disk_mb
        if self.default_disk_mb is None:
            size = None
        return LayerOptions(mapping=self.mapping, disk_size_mb=size)

    def host_ids(self, uid: int, gid: int) -> tuple[int, int]:
        """The host's ids of a user of the sandbox (for files the agent creates in it)."""
        if self.mapping is None:
            return uid, gid
        return self.mapping.host_id(uid), self.mapping.host_id(gid)

    def acting_ids(self, uid: int, gid: int) -> tuple[int, int] | None:
        """The host ids the agent takes on to act as a sandbox user in its files; None when
        it acts as itself."""
        return self.host_ids(uid, gid)

    def open_bundle(self, bundle: Path) -> None:
        """Let the sandbox's root search (only search) its bundle directory: the runtime
        resolves the rootfs from there after entering the user namespace."""
        if self.mapping is not None:
            os.chown(bundle, 0, self.mapping.base)
            os.chmod(bundle, 0o710)

    def sysfs_for(self, sandbox_dir: Path, netns: Path | None) -> Path | None:
        """Prepare a joined network namespace for a user-namespaced sandbox
        (``joined_netns.py``); the sysfs to bind at /sys, or None for a fresh one."""
        if self.mapping is None or netns is None:
            return None
        target = sandbox_dir / "sys"
        joined_netns.prepare(netns, target)
        return target

    def config_fields(self) -> dict[str, Any]:
        """The isolation fields of ``spec.SandboxConfig``."""
        return {"id_mapping": self.mapping, "seccomp": self.seccomp,
                "seccomp_bpf": self.seccomp_bpf, "rlimits": dict(self.rlimits),
                "no_swap": self.no_swap}

    def oom_counter(self, sandbox_id: str) -> Callable[[], int | None]:
        """Reads how many processes the OOM killer has killed in the sandbox so far."""
        return partial(cgroups.oom_kills, f"{self.cgroup_parent}/{sandbox_id}")


@dataclass(frozen=True)
class NoIsolation(IsolationPolicy):
    """The null policy: no user namespace, seccomp, rlimits or disk quota, and the agent
    acts in sandbox files as itself (without root it has no other ids to take)."""

    def acting_ids(self, uid: int, gid: int) -> tuple[int, int] | None:
        return None


NO_ISOLATION = NoIsolation()


def policy_for(runtime: RuntimeDriver, settings: AgentSettings) -> IsolationPolicy:
    """The settings' policy for a runtime that isolates; ``NO_ISOLATION`` for one that does not."""
    if RuntimeCapability.ISOLATES in runtime.capabilities:
        return IsolationPolicy.from_settings(settings)
    return NO_ISOLATION


def init_killed_by_oom(status: ExitStatus | None, oom_kills: int | None) -> bool:
    """The init died of SIGKILL while the sandbox had OOM kills: nothing inside can
    SIGKILL its own PID 1, so the OOM killer is the likely hand (or the host's root)."""
    return (status is not None and status.signal == signals.SIGKILL
            and oom_kills is not None and oom_kills > 0)
