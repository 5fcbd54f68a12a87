"""A sandbox's OCI bundle: its directory, its rootfs over the image, its place on the
network and the ``config.json`` a runtime starts it from.

The hot path of a spawn: one overlay mount by syscall, the network (netlink
and libnftables, ≈8 ms), two small files. Nothing here spawns a process.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from qbox.agent import spec as specs
from qbox.agent import users
from qbox.agent.interpreter.manager import GUEST_SOURCE
from qbox.agent.isolation import IsolationPolicy
from qbox.agent.network import SandboxNetwork
from qbox.agent.openat2 import RootDir
from qbox.agent.rootfs import SandboxFilesystem
from qbox.agent.sandbox import Sandbox
from qbox.agent.settings import AgentSettings


class BundleBuilder:
    def __init__(self, settings: AgentSettings, isolation: IsolationPolicy,
                 filesystem: SandboxFilesystem, network: SandboxNetwork) -> None:
        self._settings = settings
        self._isolation = isolation
        self._fs = filesystem
        self._network = network

    async def build(self, sandbox: Sandbox, lower: list[Path]) -> None:
        """Everything the runtime needs to start ``sandbox`` (its address set on the way)."""
        sandbox.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        sandbox.directory.mkdir(mode=0o700)
        isolation = self._isolation
        isolation.open_bundle(sandbox.directory)
        await asyncio.to_thread(
            self._fs.prepare, sandbox.directory, lower, specs.identity_files(sandbox.hostname),
            isolation.layer_options(sandbox.params.disk_size_mb))
        self._ensure_default_home(sandbox.rootfs)
        attachment = await self._network.attach(
            sandbox.id, internet=sandbox.params.allow_internet_access)
        sandbox.address = attachment.address
        sysfs = await asyncio.to_thread(isolation.sysfs_for, sandbox.directory,
                                        attachment.netns_path)
        config = specs.oci_config(specs.SandboxConfig(
            id=sandbox.id,
            rootfs=sandbox.rootfs,
            hostname=sandbox.hostname,
            init_source=self._settings.init_path,
            vcpus=sandbox.params.vcpus,
            memory_mb=sandbox.params.memory_mb,
            pids_limit=self._settings.pids_limit,
            env=sandbox.params.envs,
            netns_path=attachment.netns_path,
            resolv_conf=attachment.resolv_conf,
            sysfs_source=sysfs,
            guest_source=GUEST_SOURCE if GUEST_SOURCE.is_dir() else None,
            cgroup_parent=isolation.cgroup_parent,
            **isolation.config_fields(),
        ))
        (sandbox.directory / "config.json").write_text(json.dumps(config))

    def _ensure_default_home(self, rootfs: Path) -> None:
        # Commands run as uid 1000 in /home/user by default, even on an image
        # that has no such user: the directory must exist for the chdir.
        user = users.resolve_in_rootfs(rootfs, None)
        with RootDir(rootfs) as root:
            if not root.is_dir(user.home):
                uid, gid = self._isolation.host_ids(user.uid, user.gid)
                root.make_dirs(user.home, mode=0o755, uid=uid, gid=gid)


def output_spool_dir(directory: Path) -> Path:
    """Where a sandbox's command output is spooled (emptied: called when an agent takes the
    sandbox on): beside its writable layer on its own disk when it has one (so output
    counts against its disk quota, out of its sight), else in its directory."""
    disk = directory / "disk"
    spool = (disk if os.path.ismount(disk) else directory) / "output"
    spool.mkdir(mode=0o700, exist_ok=True)
    for stale in spool.iterdir():
        stale.unlink(missing_ok=True)  # an earlier agent's: its records are gone
    return spool
