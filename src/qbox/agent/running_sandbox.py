"""A running sandbox as the agent serves it: its runtime, its process table and its watcher.

Commands, shells and kernel hosts start here, as one of the sandbox's users
(as_user.py). A start that fails, or a command whose end is unknown, is told
apart from the sandbox dying under it: then the caller gets the 409 that says
why the sandbox ended, in the user's words (never a runtime's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from qbox.agent import as_user, shell, users
from qbox.agent.bundle import output_spool_dir
from qbox.agent.isolation import IsolationPolicy
from qbox.agent.openat2 import RootDir
from qbox.agent.processes import ExecResult, ProcessManager, ProcessRecord
from qbox.agent.runtime.base import (
    CommandStartError,
    ConsoleSize,
    ContainerStatus,
    ProcessHandle,
    ProcessSpec,
    RuntimeCapability,
    RuntimeDriver,
    RuntimeFailure,
)
from qbox.agent.sandbox import Sandbox, SandboxStatus
from qbox.agent.settings import AgentSettings
from qbox.core.errors import SandboxNotActiveError, SshUnavailableError
from qbox.core.sandbox_ends import describe_end

log = logging.getLogger("qbox.agent.sandboxes")

# How long a command's unknown end waits for the sandbox's watcher to see its init die.
DEATH_NOTICE_SECONDS = 5.0


def ended(sandbox: Sandbox, what: str = "is not running") -> SandboxNotActiveError:
    """The 409 for a sandbox that died: why, in the user's words."""
    reason = describe_end(sandbox.exit_reason)
    return SandboxNotActiveError(f"sandbox {sandbox.id} {what}: {reason}",
                                 details={"currentState": "stopped", "reason": reason})


class RunningSandbox:
    def __init__(self, sandbox: Sandbox, runtime: RuntimeDriver, isolation: IsolationPolicy,
                 settings: AgentSettings) -> None:
        self.sandbox = sandbox
        self.runtime = runtime
        self._isolation = isolation
        self._kill_grace = settings.kill_grace_seconds
        self.processes = ProcessManager(
            runtime, sandbox.id,
            max_finished=settings.max_finished_processes,
            output_cap_bytes=settings.output_cap_bytes,
            oom_kills=isolation.oom_counter(sandbox.id),
            kill_grace=settings.kill_grace_seconds,
            spool_dir=output_spool_dir(sandbox.directory),
        )
        # Set by the manager: the task that sees the sandbox's init exit.
        self.watcher: asyncio.Task[None] | None = None

    def _process(self, argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: str | None = None, user: str | None = None,
                 who: users.UserInfo | None = None) -> ProcessSpec:
        return as_user.command_process(self.sandbox, self._isolation, argv, env=env, cwd=cwd,
                                       user=user, who=who)

    async def spawn_kernel_host(self, argv: list[str]) -> ProcessHandle:
        # As the sandbox user in its home, like any command (its env, its limits).
        return await self.runtime.exec(self.sandbox.id, self._process(argv), stdin=True)

    async def start_command(self, argv: list[str], *, env: dict[str, str] | None,
                            cwd: str | None, user: str | None, stdin: str | None,
                            keep_stdin: bool, ephemeral: bool) -> ProcessRecord:
        process = self._process(argv, env=env, cwd=cwd, user=user)
        try:
            return await self.processes.start(process, stdin=stdin, keep_stdin=keep_stdin,
                                              ephemeral=ephemeral)
        except CommandStartError:
            if await self._not_running():
                raise ended(self.sandbox) from None
            raise

    async def exec(self, argv: list[str], *, env: dict[str, str] | None, cwd: str | None,
                   user: str | None, stdin: str | None, timeout: float | None) -> ExecResult:
        process = self._process(argv, env=env, cwd=cwd, user=user)
        try:
            result = await self.processes.run(process, stdin=stdin, timeout=timeout)
        except CommandStartError:
            if await self._not_running():
                raise ended(self.sandbox) from None
            raise
        # A negative exit code: the runtime could not learn the command's end.
        if result.exit_code < 0 and await self._died():
            result.release()
            raise ended(self.sandbox, "stopped while the command ran")
        return result

    async def open_shell(self, size: ConsoleSize, *, command: str | None,
                         user: str | None) -> shell.ShellSession:
        sandbox = self.sandbox
        user = as_user.user_of(sandbox, user)
        who = users.resolve_in_rootfs(sandbox.rootfs, user)
        with RootDir(sandbox.rootfs) as root:
            login = shell.login_shell(root, who.name)
        process = dataclasses.replace(
            self._process(shell.shell_argv(login, command), user=user, who=who,
                          env={"TERM": "xterm-256color", "SHELL": login}),
            terminal=True, console_size=size)
        try:
            handle = await self.runtime.exec(sandbox.id, process)
        except (CommandStartError, RuntimeFailure) as exc:
            if await self._not_running():
                raise ended(sandbox) from None
            raise SshUnavailableError(f"cannot open a terminal in {sandbox.id}: {exc.message}",
                                      details={"sandboxId": sandbox.id}) from exc
        session = shell.ShellSession(handle, kill_grace=self._kill_grace)
        owner = self._isolation.acting_ids(who.uid, who.gid)
        if (owner is not None and handle.console is not None
                and RuntimeCapability.HOST_PTY in self.runtime.capabilities):
            try:
                shell.give_terminal(handle.console, owner[0])
            except OSError as exc:  # the shell works without it; programs reopening it may not
                log.warning("cannot give the terminal of %s to %s: %s", sandbox.id, who.name, exc)
        return session

    async def _not_running(self) -> bool:
        """After a failed start: was it the sandbox (its init just died) rather than the command?"""
        state = await self.runtime.state(self.sandbox.id)
        return state is None or state.status is not ContainerStatus.RUNNING

    async def _died(self) -> bool:
        """After a command whose end is unknown: did the sandbox die under it? Its watcher
        records why, a moment after the runtime let the command go."""
        if self.watcher is not None and self.sandbox.status is SandboxStatus.RUNNING:
            await asyncio.wait({self.watcher}, timeout=DEATH_NOTICE_SECONDS)
        return self.sandbox.status is not SandboxStatus.RUNNING or await self._not_running()
