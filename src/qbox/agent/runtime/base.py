"""The runtime driver interface: what the sandbox manager needs from an OCI runtime.

One small Protocol. ``crun.py`` implements it for crun and runc (their CLIs
match), ``runsc.py`` for gVisor, ``fake.py`` in memory for tests that have
no root; ``factory.py`` picks them. A microVM driver would be one more.
"""

from __future__ import annotations

import asyncio
import signal as signals
from dataclasses import dataclass, field
from enum import Flag, StrEnum, auto
from pathlib import Path
from typing import Protocol

from qbox.core.errors import InternalError, ValidationError
from qbox.core.shell_protocol import ConsoleSize as ConsoleSize  # a terminal's size, as the shell protocol has it


# The runtime a sandbox's spec names when it names none; it means the host's
# default OCI runtime (crun, or runc where crun cannot run).
DEFAULT_RUNTIME = "crun"


class RuntimeCapability(Flag):
    """What a driver can do that another cannot: the agent asks these, never a driver's name."""

    NONE = 0
    # Runs each sandbox as root in namespaces of its own: the sandbox gets the isolation
    # policy, an overlay rootfs and the host's network. (The fake isolates nothing.)
    ISOLATES = auto()
    # A terminal process's PTY is a host device the sandbox's processes reopen, so the
    # sandbox's user must own it (crun, runc). gVisor emulates its PTYs: the host's end
    # is out of the sandbox's sight.
    HOST_PTY = auto()


class ContainerStatus(StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ContainerState:
    id: str
    status: ContainerStatus
    # The init process's pid on the host; None once it is gone.
    pid: int | None = None


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: killed by a signal means ``signal=N, exit_code=128+N``."""

    exit_code: int
    signal: int = 0

    @classmethod
    def killed_by(cls, signo: int) -> ExitStatus:
        return cls(128 + signo, signo)

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        # asyncio/subprocess report death by signal N as -N.
        return cls.killed_by(-returncode) if returncode < 0 else cls(returncode)


@dataclass(frozen=True)
class ProcessSpec:
    """A process to start in a container (the OCI ``process`` object, typed)."""

    args: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    # Empty for unprivileged users: they get no capabilities at all.
    capabilities: tuple[str, ...] = ()
    no_new_privileges: bool = True
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    # A pseudo-terminal instead of pipes (an interactive shell): the runtime
    # makes it, of ``console_size``, and hands its master end to the agent.
    terminal: bool = False
    console_size: ConsoleSize | None = None


class ProcessHandle(Protocol):
    """A process running in a container, as started by ``RuntimeDriver.exec``."""

    @property
    def pid(self) -> int:
        """The pid inside the container's PID namespace."""
        ...

    stdin: asyncio.StreamWriter | None
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    # The PTY master of a ``terminal`` process (its stdio then: stdout and
    # stderr are at EOF, stdin None); the caller owns and closes it. None with pipes.
    console: int | None

    async def wait(self) -> ExitStatus: ...

    def send_signal(self, signo: int) -> None:
        """Deliver a signal; a process that already exited is not an error."""
        ...

    async def signal_tree(self, signo: int) -> int:
        """Signal the process and what it started that is still around (even after it
        exited itself; see proctree.py); return how many processes were signalled."""
        ...


class RuntimeDriver(Protocol):
    name: str
    capabilities: RuntimeCapability

    async def run(self, container_id: str, bundle: Path) -> ContainerState:
        """Create and start the container from ``bundle/config.json``; return once init runs."""
        ...

    async def exec(self, container_id: str, process: ProcessSpec, *,
                   stdin: bool = False) -> ProcessHandle:
        """Start ``process`` in the running container with piped stdout/stderr
        (and stdin if asked, else /dev/null), or on a PTY when ``process.terminal``
        (``stdin`` is ignored then); return once it has started."""
        ...

    async def kill(self, container_id: str, signo: int = signals.SIGKILL) -> None:
        """Signal the container's init process."""
        ...

    async def delete(self, container_id: str) -> None:
        """Kill everything in the container and forget it. Unknown ids are not an error."""
        ...

    async def state(self, container_id: str) -> ContainerState | None: ...

    async def list(self) -> list[ContainerState]: ...

    async def wait(self, container_id: str) -> ExitStatus | None:
        """Wait for the container's init to exit; None when its status cannot be known
        (started by an earlier agent, or not found)."""
        ...

    async def close(self) -> None:
        """Stop background work (agent shutdown); containers keep running."""
        ...


class RuntimeFailure(InternalError):
    """The runtime binary failed where it should not have (details carry its stderr)."""


class CommandStartError(ValidationError):
    """The command could not be started: no such executable, bad cwd, not permitted."""
