"""The sandboxes of this host: create, watch, exec into, delete, and find again after a restart.

Create is the hot path (target: well under 150 ms through the HTTP API): the
bundle (bundle.py), then one ``crun run --detach``. A sandbox's state changes
only through lifecycle.py; restart adoption is adoption.py; what the agent
does as a sandbox's user is as_user.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from qbox.agent import adoption, as_user, shell, users
from qbox.agent import spec as specs
from qbox.agent.bundle import BundleBuilder, output_spool_dir
from qbox.agent.files import SandboxFiles
from qbox.agent.idmap import IdMapping
from qbox.agent.interpreter.manager import CodeInterpreter, CodeInterpreters
from qbox.agent.isolation import NO_ISOLATION, IsolationPolicy, oom_counter
from qbox.agent.lifecycle import DELETED_REASON, SandboxEvent, advance, init_exit_reason
from qbox.agent.network import NoNetwork, SandboxNetwork
from qbox.agent.openat2 import RootDir
from qbox.agent.processes import ExecResult, ProcessManager, ProcessRecord
from qbox.agent.rootfs import SandboxFilesystem
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
from qbox.agent.runtime.registry import Runtimes
from qbox.agent.sandbox import Sandbox, SandboxParams, SandboxStatus
from qbox.agent.sandbox_images import ImageSource, image_config_env, image_layers
from qbox.agent.settings import AgentSettings
from qbox.core.errors import (
    ConflictError,
    SandboxNotActiveError,
    SandboxNotFoundError,
    SshUnavailableError,
    ValidationError,
)
from qbox.core.ids import is_sandbox_id
from qbox.core.sandbox_ends import describe_end
from qbox.core.timefmt import utcnow

log = logging.getLogger("qbox.agent.sandboxes")

# How long a command's unknown end waits for the sandbox's watcher to see its init die.
DEATH_NOTICE_SECONDS = 5.0

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")


class SandboxManager:
    def __init__(self, settings: AgentSettings, runtime: RuntimeDriver, images: ImageSource,
                 filesystem: SandboxFilesystem, network: SandboxNetwork | None = None,
                 isolation: IsolationPolicy = NO_ISOLATION,
                 runtimes: Mapping[str, RuntimeDriver] | None = None) -> None:
        """``runtime`` is the default driver, ``runtimes`` the others by name ("runsc")."""
        self._settings = settings
        self._runtimes = Runtimes(runtime, runtimes)
        self._isolation = isolation
        self._network: SandboxNetwork = network or NoNetwork()
        self._bundles = BundleBuilder(settings, isolation, filesystem, self._network)
        self._images = images
        self._fs = filesystem
        self._dir = settings.sandboxes_dir
        self._sandboxes: dict[str, Sandbox] = {}
        self._processes: dict[str, ProcessManager] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._image_envs: dict[str, dict[str, str]] = {}
        # Jupyter kernels per sandbox (interpreter/): warmed up at boot when the image has some.
        self.interpreters = CodeInterpreters()

    # --- lookup ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Sandbox]:
        return iter([s for s in self._sandboxes.values()
                     if s.status is not SandboxStatus.CREATING and not s.params.build])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def get(self, sandbox_id: str) -> Sandbox:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.status is SandboxStatus.CREATING:
            raise SandboxNotFoundError(f"sandbox {sandbox_id} is not on this host",
                                       details={"sandboxId": sandbox_id})
        return sandbox

    def _active(self, sandbox_id: str) -> Sandbox:
        sandbox = self.get(sandbox_id)
        if sandbox.status is SandboxStatus.STOPPED:
            raise self._ended(sandbox)
        if sandbox.status is not SandboxStatus.RUNNING:
            raise SandboxNotActiveError(f"sandbox {sandbox_id} is {sandbox.status.value}",
                                        details={"currentState": sandbox.status.value})
        return sandbox

    @property
    def runtime_names(self) -> list[str]:
        return self._runtimes.names

    def processes(self, sandbox_id: str) -> ProcessManager:
        self._active(sandbox_id)
        return self._processes[sandbox_id]

    def code(self, sandbox_id: str) -> CodeInterpreter:
        self._active(sandbox_id)
        return self.interpreters.get(sandbox_id)

    @property
    def id_mapping(self) -> IdMapping | None:
        """The user namespace's id shift of every sandbox's files (None: host ids)."""
        return self._isolation.mapping

    def image_digests_in_use(self) -> set[str]:
        """The images of every sandbox this agent holds (builds too): never collected."""
        return {s.params.image_digest for s in self._sandboxes.values()}

    def files(self, sandbox_id: str, user: str | None = None) -> SandboxFiles:
        """The sandbox's files as ``user`` (None: the default user) may see and change them."""
        return as_user.files_as(self._active(sandbox_id), self._isolation, user)

    def files_owned_by(self, sandbox_id: str, user: str) -> SandboxFiles:
        """The sandbox's files with its root's rights, what they create owned by ``user``."""
        return as_user.files_owned_by(self._active(sandbox_id), self._isolation, user)

    @asynccontextmanager
    async def _locked(self, sandbox_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(sandbox_id, asyncio.Lock())
        async with lock:
            yield
        if not lock.locked() and sandbox_id not in self._sandboxes:
            self._locks.pop(sandbox_id, None)

    # --- create ----------------------------------------------------------------

    def _validate(self, params: SandboxParams) -> None:
        if not is_sandbox_id(params.id):
            raise ValidationError.for_fields({"id": "must look like sb_<8-40 of [0-9a-z]>"})
        if params.hostname is not None and not _HOSTNAME_RE.match(params.hostname):
            raise ValidationError.for_fields({"hostname": "must be a valid host name label"})
        if params.vcpus < 1 or params.memory_mb < 16:
            raise ValidationError.for_fields({"vcpus/memoryMb": "vcpus ≥ 1, memoryMb ≥ 16"})
        specs.check_env(params.envs, "envs")

    async def create(self, params: SandboxParams) -> Sandbox:
        self._validate(params)
        runtime = self._runtimes.for_spawn(params.runtime)
        async with self._locked(params.id):
            if params.id in self._sandboxes:
                raise ConflictError(f"sandbox {params.id} already exists on this host")
            lower = await image_layers(self._images, params)
            directory = self._dir / params.id
            if directory.exists():
                # Left from a failed cleanup (a live one would have been loaded).
                await self._teardown(params.id, directory)
            image_env = self._image_envs.get(params.image_digest)
            if image_env is None:
                image_env = image_config_env(self._images, params.image_digest)
                self._image_envs[params.image_digest] = image_env
            sandbox = Sandbox(params, directory, utcnow(), image_env=dict(image_env))
            self._sandboxes[params.id] = sandbox
            try:
                await self._bundles.build(sandbox, lower)
                # Saved before the runtime starts anything, so a crash in between
                # leaves a sandbox the next agent knows about (and can delete).
                sandbox.save()
                await runtime.run(sandbox.id, sandbox.directory)
                advance(sandbox, SandboxEvent.BOOTED)
                sandbox.save()
                self._attach(sandbox)
            except BaseException:
                self._sandboxes.pop(params.id, None)
                try:
                    await self._teardown(params.id, directory, [runtime])
                except Exception:  # noqa: BLE001 - the boot failure is the error to report
                    log.exception("cleaning up after the failed boot of %s", params.id)
                raise
            return sandbox

    def _attach(self, sandbox: Sandbox) -> None:
        """Take the running sandbox on: its process table, its watcher, its kernels."""
        self._processes[sandbox.id] = ProcessManager(
            self._runtimes.of(sandbox), sandbox.id,
            max_finished=self._settings.max_finished_processes,
            output_cap_bytes=self._settings.output_cap_bytes,
            oom_kills=oom_counter(sandbox.id),
            kill_grace=self._settings.kill_grace_seconds,
            spool_dir=output_spool_dir(sandbox.directory),
        )
        self._watchers[sandbox.id] = asyncio.create_task(self._watch(sandbox))
        self.interpreters.attach(sandbox.id, sandbox.rootfs,
                                 functools.partial(self._spawn_kernel_host, sandbox))

    async def _spawn_kernel_host(self, sandbox: Sandbox, argv: list[str]) -> ProcessHandle:
        # As the sandbox user in its home, like any command (its env, its limits).
        process = self._process_spec(sandbox, argv, env=None, cwd=None, user=None)
        return await self._runtimes.of(sandbox).exec(sandbox.id, process, stdin=True)

    async def _watch(self, sandbox: Sandbox) -> None:
        """Mark the sandbox stopped when its init exits (not through delete)."""
        try:
            status = await self._runtimes.of(sandbox).wait(sandbox.id)
        except Exception:  # noqa: BLE001 - a broken watcher must not take the agent down
            log.exception("watching sandbox %s failed", sandbox.id)
            return
        if self._sandboxes.get(sandbox.id) is not sandbox:
            return
        reason = init_exit_reason(status, oom_counter(sandbox.id)())
        if advance(sandbox, SandboxEvent.INIT_EXITED, reason):
            log.info("sandbox %s stopped: %s", sandbox.id, sandbox.exit_reason)
            try:
                sandbox.save()
            except OSError:
                log.warning("cannot save the state of %s", sandbox.id, exc_info=True)

    # --- delete ----------------------------------------------------------------

    async def delete(self, sandbox_id: str) -> None:
        """Kill everything in the sandbox, unmount, remove. Idempotent."""
        if not is_sandbox_id(sandbox_id):
            return  # could never have been created: nothing to remove
        async with self._locked(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is not None:
                advance(sandbox, SandboxEvent.DELETED, DELETED_REASON)
            await self._teardown(sandbox_id, self._dir / sandbox_id)
            self._sandboxes.pop(sandbox_id, None)

    async def stop(self, sandbox_id: str, reason: str) -> Sandbox:
        """End every process of the sandbox but keep its filesystem (a build's commit reads
        its layer); ``delete`` removes the rest."""
        async with self._locked(sandbox_id):
            sandbox = self.get(sandbox_id)
            advance(sandbox, SandboxEvent.HALTED, reason)
            await self._teardown(sandbox_id, self._dir / sandbox_id,
                                 [self._runtimes.of(sandbox)], keep_filesystem=True)
            return sandbox

    async def _teardown(self, sandbox_id: str, directory: Path,
                        runtimes: list[RuntimeDriver] | None = None, *,
                        keep_filesystem: bool = False) -> None:
        """Every step runs even when an earlier one fails, so one error never strands the rest
        (mounts, loop devices, the netns); the first error is raised at the end. With
        ``keep_filesystem`` only the processes end (the rootfs, disk and netns stay)."""
        watcher = self._watchers.pop(sandbox_id, None)
        errors: list[BaseException] = []

        async def step(action: Callable[[], Awaitable[object]]) -> None:
            try:
                await action()
            except Exception as exc:  # noqa: BLE001 - collected, raised below
                log.warning("teardown of %s: %s", sandbox_id, exc)
                errors.append(exc)

        if runtimes is None:
            runtimes = self._runtimes.that_may_hold(self._sandboxes.get(sandbox_id))
        for runtime in runtimes:
            await step(functools.partial(runtime.delete, sandbox_id))
        processes = self._processes.pop(sandbox_id, None)
        if processes is not None:
            await step(processes.close)
        await step(functools.partial(self.interpreters.detach, sandbox_id))
        if watcher is not None:
            watcher.cancel()
        if not keep_filesystem:
            if directory.exists():
                await step(lambda: asyncio.to_thread(self._fs.release, directory))
            await step(lambda: self._network.detach(sandbox_id))
        if errors:
            raise errors[0]

    # --- commands --------------------------------------------------------------

    def _process_spec(self, sandbox: Sandbox, argv: list[str], *, env: dict[str, str] | None,
                      cwd: str | None, user: str | None,
                      who: users.UserInfo | None = None) -> ProcessSpec:
        return as_user.command_process(sandbox, self._isolation, argv, env=env, cwd=cwd,
                                       user=user, who=who)

    async def _not_running(self, sandbox: Sandbox) -> bool:
        """After a failed start: was it the sandbox (its init just died) rather than the command?"""
        state = await self._runtimes.of(sandbox).state(sandbox.id)
        return state is None or state.status is not ContainerStatus.RUNNING

    async def _died(self, sandbox: Sandbox) -> bool:
        """After a command whose end is unknown: did the sandbox die under it? Its watcher
        records why, a moment after the runtime let the command go."""
        watcher = self._watchers.get(sandbox.id)
        if watcher is not None and sandbox.status is SandboxStatus.RUNNING:
            await asyncio.wait({watcher}, timeout=DEATH_NOTICE_SECONDS)
        return sandbox.status is not SandboxStatus.RUNNING or await self._not_running(sandbox)

    @staticmethod
    def _ended(sandbox: Sandbox, what: str = "is not running") -> SandboxNotActiveError:
        """The 409 for a sandbox that died: why, in the user's words (never a runtime's)."""
        reason = describe_end(sandbox.exit_reason)
        return SandboxNotActiveError(f"sandbox {sandbox.id} {what}: {reason}",
                                     details={"currentState": "stopped", "reason": reason})

    async def start_command(self, sandbox_id: str, argv: list[str], *,
                            env: dict[str, str] | None = None, cwd: str | None = None,
                            user: str | None = None, stdin: str | None = None,
                            keep_stdin: bool = False,
                            ephemeral: bool = False) -> ProcessRecord:
        """Start a command; ``ephemeral`` for a streamed /exec (see ProcessManager.start)."""
        sandbox = self._active(sandbox_id)
        process = self._process_spec(sandbox, argv, env=env, cwd=cwd, user=user)
        try:
            return await self._processes[sandbox_id].start(
                process, stdin=stdin, keep_stdin=keep_stdin, ephemeral=ephemeral)
        except CommandStartError:
            if await self._not_running(sandbox):
                raise self._ended(sandbox) from None
            raise

    async def exec(self, sandbox_id: str, argv: list[str], *, env: dict[str, str] | None = None,
                   cwd: str | None = None, user: str | None = None, stdin: str | None = None,
                   timeout: float | None = None) -> ExecResult:
        sandbox = self._active(sandbox_id)
        process = self._process_spec(sandbox, argv, env=env, cwd=cwd, user=user)
        try:
            result = await self._processes[sandbox_id].run(process, stdin=stdin, timeout=timeout)
        except CommandStartError:
            if await self._not_running(sandbox):
                raise self._ended(sandbox) from None
            raise
        # A negative exit code: the runtime could not learn the command's end.
        if result.exit_code < 0 and await self._died(sandbox):
            result.release()
            raise self._ended(sandbox, "stopped while the command ran")
        return result

    async def open_shell(self, sandbox_id: str, size: ConsoleSize, *, command: str | None = None,
                         user: str | None = None) -> shell.ShellSession:
        """The user's login shell on a PTY (running ``command`` if given), like an ssh login:
        as that user, in their home, with the sandbox's env plus TERM and SHELL."""
        sandbox = self._active(sandbox_id)
        runtime = self._runtimes.of(sandbox)
        user = as_user.user_of(sandbox, user)
        who = users.resolve_in_rootfs(sandbox.rootfs, user)
        with RootDir(sandbox.rootfs) as root:
            login = shell.login_shell(root, who.name)
        process = dataclasses.replace(
            self._process_spec(sandbox, shell.shell_argv(login, command), cwd=None, user=user,
                               who=who, env={"TERM": "xterm-256color", "SHELL": login}),
            terminal=True, console_size=size)
        try:
            handle = await runtime.exec(sandbox.id, process)
        except (CommandStartError, RuntimeFailure) as exc:
            if await self._not_running(sandbox):
                raise self._ended(sandbox) from None
            raise SshUnavailableError(f"cannot open a terminal in {sandbox_id}: {exc.message}",
                                      details={"sandboxId": sandbox_id}) from exc
        session = shell.ShellSession(handle, kill_grace=self._settings.kill_grace_seconds)
        owner = self._isolation.acting_ids(who.uid, who.gid)
        if (owner is not None and handle.console is not None
                and RuntimeCapability.HOST_PTY in runtime.capabilities):
            try:
                shell.give_terminal(handle.console, owner[0])
            except OSError as exc:  # the shell works without it; programs reopening it may not
                log.warning("cannot give the terminal of %s to %s: %s", sandbox_id, who.name, exc)
        return session

    # --- restart ---------------------------------------------------------------

    async def load(self) -> None:
        """Take on what an earlier agent left (adoption.py): the running sandboxes are
        served again, the stopped ones kept, interrupted builds removed."""
        survivors = await adoption.find_survivors(self._dir, self._runtimes, self._fs)
        for build in survivors.builds:
            log.warning("removing the sandbox %s of an interrupted template build", build.id)
            await self._teardown(build.id, build.directory)
        for sandbox in survivors.running:
            self._sandboxes[sandbox.id] = sandbox
            self._attach(sandbox)
        for sandbox in survivors.stopped:
            self._sandboxes[sandbox.id] = sandbox
        # The network keeps the sandboxes held here and removes its other leftovers.
        attachments = await self._network.start(set(self._sandboxes))
        for sandbox_id, sandbox in self._sandboxes.items():
            attachment = attachments.get(sandbox_id)
            sandbox.address = attachment.address if attachment else None

    async def close(self) -> None:
        """Stop watching (on agent shutdown); sandboxes keep running."""
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
        # Closing a kernel host's stdin makes it shut its kernels down.
        await self.interpreters.close()
        await self._network.close()
