"""What an earlier agent left on this host, found again when an agent starts.

Each sandbox directory is read back from its state file and sorted: running
(its init alive, its filesystem ready: served again), stopped (kept, so the
control plane learns why it ended), or an interrupted template build (to be
removed). Unreadable directories and runtime containers without a directory
are removed here; the network sorts out its own leftovers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from qbox.agent.lifecycle import SandboxEvent, advance
from qbox.agent.rootfs import SandboxFilesystem
from qbox.agent.runtime.base import ContainerState, ContainerStatus
from qbox.agent.runtime.registry import Runtimes
from qbox.agent.sandbox import STATE_FILE, Sandbox, SandboxStatus
from qbox.core.ids import is_sandbox_id

log = logging.getLogger("qbox.agent.sandboxes")

# A container of a sandbox the runtime still runs (or holds paused): its init is alive.
_ALIVE = (ContainerStatus.RUNNING, ContainerStatus.PAUSED)


@dataclass
class Survivors:
    running: list[Sandbox] = field(default_factory=list)
    stopped: list[Sandbox] = field(default_factory=list)
    builds: list[Sandbox] = field(default_factory=list)


async def find_survivors(sandboxes_dir: Path, runtimes: Runtimes,
                         filesystem: SandboxFilesystem) -> Survivors:
    """The sandboxes under ``sandboxes_dir``, sorted; the ones found without a live init
    are marked stopped (and saved) on the way."""
    containers = {name: {c.id: c for c in await runtime.list()}
                  for name, runtime in runtimes.items()}
    directories = sorted(sandboxes_dir.iterdir()) if sandboxes_dir.is_dir() else []
    survivors = Survivors()
    for directory in directories:
        sandbox = await _read(directory, runtimes, filesystem)
        if sandbox is not None:
            _sort(sandbox, containers, runtimes, filesystem, survivors)
    known = {d.name for d in directories}
    for name, runtime in runtimes.items():
        for container_id in containers[name].keys() - known:
            if is_sandbox_id(container_id):
                log.warning("deleting %s container %s: no sandbox directory", name, container_id)
                await runtime.delete(container_id)
    return survivors


async def _read(directory: Path, runtimes: Runtimes,
                filesystem: SandboxFilesystem) -> Sandbox | None:
    """The sandbox of ``directory``; None when its state file is unreadable (then removed)."""
    sandbox_id = directory.name
    try:
        sandbox = Sandbox.load(directory)
        if sandbox.id != sandbox_id:
            raise ValueError("state file names another sandbox")
        return sandbox
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("removing %s: unreadable %s (%s)", directory, STATE_FILE, exc)
    if is_sandbox_id(sandbox_id):
        for _, runtime in runtimes.items():
            await runtime.delete(sandbox_id)
    # Through the filesystem: its rootfs may still be mounted.
    await asyncio.to_thread(filesystem.release, directory)
    return None


def _sort(sandbox: Sandbox, containers: dict[str, dict[str, ContainerState]],
          runtimes: Runtimes, filesystem: SandboxFilesystem, survivors: Survivors) -> None:
    if sandbox.params.build:
        # Its build ended with the agent that ran it: nobody can commit it now.
        survivors.builds.append(sandbox)
        return
    container = containers.get(sandbox.params.runtime, {}).get(sandbox.id)
    alive = container is not None and container.status in _ALIVE
    if (sandbox.status is SandboxStatus.RUNNING and alive
            and filesystem.is_ready(sandbox.directory)):
        survivors.running.append(sandbox)
        return
    if advance(sandbox, SandboxEvent.LOST, _lost_reason(sandbox, runtimes)):
        sandbox.save()
    survivors.stopped.append(sandbox)


def _lost_reason(sandbox: Sandbox, runtimes: Runtimes) -> str:
    if sandbox.booted_at is None:
        return "boot interrupted"
    if sandbox.params.runtime not in runtimes:
        return f"lost: runtime {sandbox.params.runtime} is not available"
    return "lost: its init is gone (agent or host restarted)"
