"""An in-memory runtime for unit tests (the agent's and the control plane's): no root needed.

Containers are records; ``exec`` runs the command on the host as the current
user, in the sandbox's (plain directory) rootfs, with the environment it was
given. Good enough to exercise output, exit codes, signals and timeouts end
to end; it isolates nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import signal as signals
import termios
from dataclasses import dataclass, field
from pathlib import Path

from qbox.agent import proctree
from qbox.agent.runtime.base import (
    CommandStartError,
    ConsoleSize,
    ContainerState,
    ContainerStatus,
    ExitStatus,
    ProcessSpec,
    RuntimeCapability,
    RuntimeFailure,
)
from qbox.agent.runtime.pipes import ProcessPipes, ended_stream, set_console_size


class FakeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, stdin: asyncio.StreamWriter | None,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 console: int | None = None) -> None:
        self._proc = proc
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.console = console

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def wait(self) -> ExitStatus:
        return ExitStatus.from_returncode(await self._proc.wait())

    def send_signal(self, signo: int) -> None:
        if self._proc.returncode is None:
            try:
                self._proc.send_signal(signo)
            except ProcessLookupError:
                pass

    async def signal_tree(self, signo: int) -> int:
        # Started in a session of its own, so its tree is that session (simpler than
        # the real runtimes, enough for tests; it includes a shell's jobs, which job
        # control puts in process groups of their own).
        session = self._proc.pid

        def find_and_signal() -> int:
            members = [p for p in proctree.scan() if p.session == session]
            return proctree.signal_host(members, signo)

        return await asyncio.to_thread(find_and_signal)


@dataclass
class _Container:
    id: str
    rootfs: Path
    status: ContainerStatus = ContainerStatus.RUNNING
    processes: list[FakeProcess] = field(default_factory=list)
    exit: asyncio.Future[ExitStatus | None] | None = None


class FakeRuntime:
    name = "fake"
    # Its processes are the agent's own children on host PTYs, isolated from nothing.
    capabilities = RuntimeCapability.HOST_PTY

    def __init__(self) -> None:
        self._containers: dict[str, _Container] = {}
        # Tests may inspect what was asked of the runtime.
        self.execs: list[tuple[str, ProcessSpec]] = []
        # Tests may slow down or fail starting containers, or terminals (a shell's exec).
        self.run_delay = 0.0
        self.run_error: RuntimeFailure | None = None
        self.terminal_error: RuntimeFailure | None = None

    async def run(self, container_id: str, bundle: Path) -> ContainerState:
        if self.run_delay:
            await asyncio.sleep(self.run_delay)
        if self.run_error is not None:
            raise self.run_error
        if container_id in self._containers:
            raise RuntimeFailure(f"fake run failed: container {container_id} exists")
        config = json.loads((bundle / "config.json").read_text())
        container = _Container(container_id, Path(config["root"]["path"]))
        container.exit = asyncio.get_running_loop().create_future()
        self._containers[container_id] = container
        return ContainerState(container_id, ContainerStatus.RUNNING, None)

    def _running(self, container_id: str) -> _Container:
        container = self._containers.get(container_id)
        if container is None or container.status is not ContainerStatus.RUNNING:
            raise RuntimeFailure(f"fake exec failed: container {container_id} is not running")
        return container

    async def exec(self, container_id: str, process: ProcessSpec, *,
                   stdin: bool = False) -> FakeProcess:
        container = self._running(container_id)
        self.execs.append((container_id, process))
        cwd = container.rootfs / process.cwd.lstrip("/")
        if not cwd.is_dir():
            cwd = container.rootfs
        process = dataclasses.replace(process, args=_program_in(container.rootfs, process.args))
        if process.terminal:
            if self.terminal_error is not None:
                raise self.terminal_error
            handle = await _start_on_terminal(process, cwd)
            container.processes.append(handle)
            return handle
        pipes = ProcessPipes(stdin=stdin)
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *process.args, cwd=cwd, env=process.env,
                    stdin=pipes.in_read, stdout=pipes.out_write, stderr=pipes.err_write,
                    start_new_session=True,
                )
            finally:
                pipes.close_child_ends()
            writer, out, err = await pipes.streams()
        except (FileNotFoundError, PermissionError) as exc:
            pipes.close_all()
            raise CommandStartError(f"cannot start {process.args[0]!r}: {exc.strerror}") from exc
        except BaseException:
            pipes.close_all()
            raise
        handle = FakeProcess(proc, writer, out, err)
        container.processes.append(handle)
        return handle

    def _stop(self, container: _Container, status: ExitStatus) -> None:
        for handle in container.processes:
            try:
                os.killpg(handle.pid, signals.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        container.status = ContainerStatus.STOPPED
        if container.exit is not None and not container.exit.done():
            container.exit.set_result(status)

    async def kill(self, container_id: str, signo: int = signals.SIGKILL) -> None:
        container = self._containers.get(container_id)
        if container is None:
            raise RuntimeFailure(f"fake kill failed: no container {container_id}")
        # catatonit ignores everything but the signals that end it.
        if signo in (signals.SIGKILL, signals.SIGTERM, signals.SIGINT):
            self._stop(container, ExitStatus.killed_by(signo))

    async def delete(self, container_id: str) -> None:
        container = self._containers.pop(container_id, None)
        if container is not None:
            self._stop(container, ExitStatus.killed_by(signals.SIGKILL))

    async def state(self, container_id: str) -> ContainerState | None:
        container = self._containers.get(container_id)
        if container is None:
            return None
        return ContainerState(container_id, container.status, None)

    async def list(self) -> list[ContainerState]:
        return [ContainerState(c.id, c.status, None) for c in self._containers.values()]

    async def wait(self, container_id: str) -> ExitStatus | None:
        container = self._containers.get(container_id)
        if container is None or container.exit is None:
            return None
        return await asyncio.shield(container.exit)

    async def close(self) -> None:
        pass


async def _start_on_terminal(process: ProcessSpec, cwd: Path) -> FakeProcess:
    """The process on a new PTY that becomes its controlling terminal, as a runtime does it."""
    master, slave = os.openpty()
    size = process.console_size or ConsoleSize(80, 24)
    set_console_size(master, size.cols, size.rows)
    try:
        proc = await asyncio.create_subprocess_exec(
            *process.args, cwd=cwd, env=process.env,
            stdin=slave, stdout=slave, stderr=slave,
            start_new_session=True, preexec_fn=_take_terminal,
        )
    except (FileNotFoundError, PermissionError) as exc:
        os.close(master)
        raise CommandStartError(f"cannot start {process.args[0]!r}: {exc.strerror}") from exc
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return FakeProcess(proc, None, ended_stream(), ended_stream(), console=master)


def _program_in(rootfs: Path, args: list[str]) -> list[str]:
    """An absolute program the sandbox holds (an executable file there) runs from the
    sandbox; any other from this machine."""
    own = rootfs / args[0].lstrip("/")
    if args[0].startswith("/") and own.is_file() and os.access(own, os.X_OK):
        return [str(own), *args[1:]]
    return args


def _take_terminal() -> None:
    # In the child, after setsid: stdin (the PTY) becomes its controlling terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
