"""The sandboxes of this host: create, watch, exec into, delete, and find again after a restart.

Create is the hot path (target: well under 150 ms through the HTTP API):
one overlay mount by syscall, the network (netlink and libnftables, ≈8 ms),
two small files, one ``crun run --detach``. Nothing else spawns a process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from qbox.agent import fsid, shell, users
from qbox.agent import spec as specs
from qbox.agent.files import Identity, SandboxFiles
from qbox.agent.idmap import IdMapping
from qbox.agent.interpreter.manager import GUEST_SOURCE, CodeInterpreter, CodeInterpreters
from qbox.agent.isolation import OOM_EXIT_REASON, IsolationPolicy, init_killed_by_oom, oom_counter
from qbox.agent.network import NoNetwork, SandboxNetwork
from qbox.agent.openat2 import RootDir
from qbox.agent.processes import ExecResult, ProcessManager, ProcessRecord
from qbox.agent.rootfs import SandboxFilesystem
from qbox.agent.runtime.base import (
    DEFAULT_RUNTIME,
    CommandStartError,
    ConsoleSize,
    ContainerState,
    ContainerStatus,
    ExitStatus,
    ProcessHandle,
    ProcessSpec,
    RuntimeDriver,
    RuntimeFailure,
)
from qbox.agent.sandbox import STATE_FILE, Sandbox, SandboxParams, SandboxStatus
from qbox.agent.sandbox_images import ImageSource, image_config_env, image_layers
from qbox.agent.settings import AgentSettings
from qbox.core.errors import (
    ConflictError,
    SandboxNotActiveError,
    SandboxNotFoundError,
    SshUnavailableError,
    TemplateNotReadyError,
    ValidationError,
)
from qbox.core.ids import is_sandbox_id
from qbox.core.sandbox_ends import describe_end
from qbox.core.timefmt import utcnow

log = logging.getLogger("qbox.agent.sandboxes")

# How long a command's unknown end waits for the sandbox's watcher to see its init die.
DEATH_NOTICE_SECONDS = 5.0

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")


def _user_of(sandbox: Sandbox, user: str | None) -> str | None:
    """The call's user, else the sandbox's default (None, as "user" is: uid 1000 by any name)."""
    if user:
        return user
    default = sandbox.params.user
    return None if default in (None, "", users.DEFAULT_USER) else default


def describe_exit(status: ExitStatus | None) -> str:
    if status is None:
        return "init exited"
    if status.signal:
        return f"init killed by signal {status.signal}"
    return f"init exited with code {status.exit_code}"


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


class SandboxManager:
    def __init__(self, settings: AgentSettings, runtime: RuntimeDriver, images: ImageSource,
                 filesystem: SandboxFilesystem, network: SandboxNetwork | None = None,
                 isolation: IsolationPolicy | None = None,
                 runtimes: dict[str, RuntimeDriver] | None = None) -> None:
        self._settings = settings
        # --- runtimes (docs/isolation.md) ---
        # By the name a spec asks for: "crun" is the default driver (crun, or
        # runc where crun cannot run), ``runtimes`` adds others ("runsc").
        # A sandbox stays with the runtime it was created with.
        self._runtimes: dict[str, RuntimeDriver] = {DEFAULT_RUNTIME: runtime, **(runtimes or {})}
        self._runtime = runtime
        # None → no user namespace, seccomp, rlimits or disk quota (the fake runtime).
        self._isolation = isolation or IsolationPolicy()
        # File operations take the sandbox user's filesystem ids (not with the fake runtime).
        self._acts_as_users = isolation is not None
        self._network: SandboxNetwork = network or NoNetwork()
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
        return sorted(self._runtimes)

    def _runtime_of(self, sandbox: Sandbox) -> RuntimeDriver:
        runtime = self._runtimes.get(sandbox.params.runtime)
        if runtime is None:
            raise SandboxNotActiveError(
                f"sandbox {sandbox.id} runs under {sandbox.params.runtime}, which this agent "
                "does not offer any more", details={"currentState": sandbox.status.value})
        return runtime

    def _runtimes_for(self, sandbox_id: str) -> list[RuntimeDriver]:
        """The runtime a sandbox was created with; every runtime when that is not known."""
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            return list(self._runtimes.values())
        runtime = self._runtimes.get(sandbox.params.runtime)
        return [runtime] if runtime is not None else []

    def processes(self, sandbox_id: str) -> ProcessManager:
        self._active(sandbox_id)
        return self._processes[sandbox_id]

    def code(self, sandbox_id: str) -> CodeInterpreter:
        self._active(sandbox_id)
        return self.interpreters.get(sandbox_id)

    @property
    def id_mapping(self) -> IdMapping | None:
        """The user namespace's id shift of every sandbox's files (None: host ids)."""
        return self._isolation.mapping if self._acts_as_users else None

    def image_digests_in_use(self) -> set[str]:
        """The images of every sandbox this agent holds (builds too): never collected."""
        return {s.params.image_digest for s in self._sandboxes.values()}

    def files(self, sandbox_id: str, user: str | None = None) -> SandboxFiles:
        """The sandbox's files as ``user`` (None: the default user) may see and change them."""
        sandbox = self._active(sandbox_id)
        who = users.resolve_in_rootfs(sandbox.rootfs, _user_of(sandbox, user))
        if not self._acts_as_users:
            return SandboxFiles(sandbox.rootfs, home=who.home)
        host_ids = self._isolation.host_ids(who.uid, who.gid)
        if who.uid == 0:
            # The sandbox's root overrides permissions there: the agent keeps its
            # own filesystem ids (still confined to the root by openat2).
            return SandboxFiles(sandbox.rootfs, home=who.home, owner=host_ids)
        identity: Identity = functools.partial(fsid.acting_as, *host_ids)
        return SandboxFiles(sandbox.rootfs, home=who.home, identity=identity)

    def files_owned_by(self, sandbox_id: str, user: str) -> SandboxFiles:
        """The sandbox's files with its root's rights (still confined to its root by
        openat2), what they create owned by ``user`` (a build's copy step)."""
        sandbox = self._active(sandbox_id)
        who = users.resolve_in_rootfs(sandbox.rootfs, user)
        owner = self._isolation.host_ids(who.uid, who.gid) if self._acts_as_users else None
        return SandboxFiles(sandbox.rootfs, home=who.home, owner=owner)

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
        runtime = self._runtimes.get(params.runtime)
        if runtime is None:
            raise TemplateNotReadyError(
                f"runtime {params.runtime} is not available on this host",
                details={"runtime": params.runtime, "availableRuntimes": self.runtime_names})
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
                await self._boot(sandbox, lower)
            except BaseException:
                self._sandboxes.pop(params.id, None)
                try:
                    await self._teardown(params.id, directory, [runtime])
                except Exception:  # noqa: BLE001 - the boot failure is the error to report
                    log.exception("cleaning up after the failed boot of %s", params.id)
                raise
            return sandbox

    async def _boot(self, sandbox: Sandbox, lower: list[Path]) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sandbox.directory.mkdir(mode=0o700)
        isolation = self._isolation
        isolation.open_bundle(sandbox.directory)
        await asyncio.to_thread(
            self._fs.prepare, sandbox.directory, lower, specs.identity_files(sandbox.hostname),
            isolation.layer_options(sandbox.params.disk_size_mb))
        self._ensure_default_home(sandbox.rootfs, isolation)
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
            **isolation.config_fields(),
        ))
        (sandbox.directory / "config.json").write_text(json.dumps(config))
        # Saved before the runtime starts anything, so a crash in between
        # leaves a sandbox the next agent knows about (and can delete).
        sandbox.save()
        await self._runtime_of(sandbox).run(sandbox.id, sandbox.directory)
        sandbox.status = SandboxStatus.RUNNING
        sandbox.booted_at = utcnow()
        sandbox.save()
        self._attach(sandbox)

    def _ensure_default_home(self, rootfs: Path, isolation: IsolationPolicy) -> None:
        # Commands run as uid 1000 in /home/user by default, even on an image
        # that has no such user: the directory must exist for the chdir.
        user = users.resolve_in_rootfs(rootfs, None)
        with RootDir(rootfs) as root:
            if not root.is_dir(user.home):
                uid, gid = isolation.host_ids(user.uid, user.gid)
                root.make_dirs(user.home, mode=0o755, uid=uid, gid=gid)

    def _attach(self, sandbox: Sandbox) -> None:
        self._processes[sandbox.id] = ProcessManager(
            self._runtime_of(sandbox), sandbox.id,
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
        return await self._runtime_of(sandbox).exec(sandbox.id, process, stdin=True)

    async def _watch(self, sandbox: Sandbox) -> None:
        """Mark the sandbox stopped when its init exits (not through delete)."""
        try:
            status = await self._runtime_of(sandbox).wait(sandbox.id)
        except Exception:  # noqa: BLE001 - a broken watcher must not take the agent down
            log.exception("watching sandbox %s failed", sandbox.id)
            return
        if self._sandboxes.get(sandbox.id) is not sandbox:
            return
        if sandbox.status is SandboxStatus.RUNNING:
            sandbox.status = SandboxStatus.STOPPED
            sandbox.exit_reason = (OOM_EXIT_REASON
                                   if init_killed_by_oom(status, oom_counter(sandbox.id)())
                                   else describe_exit(status))
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
                sandbox.status = SandboxStatus.STOPPED
                sandbox.exit_reason = sandbox.exit_reason or "deleted"
            await self._teardown(sandbox_id, self._dir / sandbox_id)
            self._sandboxes.pop(sandbox_id, None)

    async def stop(self, sandbox_id: str, reason: str) -> Sandbox:
        """End every process of the sandbox but keep its filesystem (a build's commit reads
        its layer); ``delete`` removes the rest."""
        async with self._locked(sandbox_id):
            sandbox = self.get(sandbox_id)
            sandbox.status = SandboxStatus.STOPPED
            sandbox.exit_reason = sandbox.exit_reason or reason
            await self._teardown(sandbox_id, self._dir / sandbox_id, [self._runtime_of(sandbox)],
                                 keep_filesystem=True)
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

        for runtime in self._runtimes_for(sandbox_id) if runtimes is None else runtimes:
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
                      cwd: str | None, user: str | None, who: users.UserInfo | None = None) -> ProcessSpec:
        """``argv`` as ``user`` (or ``who``, when the caller has resolved it already)."""
        who = who or users.resolve_in_rootfs(sandbox.rootfs, _user_of(sandbox, user))
        if cwd is None:
            with RootDir(sandbox.rootfs) as root:
                # A directory that does not exist (nobody's /nonexistent) would fail the chdir.
                defaults = [d for d in (sandbox.params.workdir, who.home) if d]
                cwd = next((d for d in defaults if root.is_dir(d)), "/")
        return specs.exec_process(who, argv, image_env=sandbox.image_env,
                                  sandbox_env=sandbox.params.envs, call_env=env, cwd=cwd,
                                  rlimits=self._isolation.rlimits)

    async def _not_running(self, sandbox: Sandbox) -> bool:
        """After a failed start: was it the sandbox (its init just died) rather than the command?"""
        state = await self._runtime_of(sandbox).state(sandbox.id)
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
        user = _user_of(sandbox, user)
        who = users.resolve_in_rootfs(sandbox.rootfs, user)
        with RootDir(sandbox.rootfs) as root:
            login = shell.login_shell(root, who.name)
        process = dataclasses.replace(
            self._process_spec(sandbox, shell.shell_argv(login, command), cwd=None, user=user, who=who,
                               env={"TERM": "xterm-256color", "SHELL": login}),
            terminal=True, console_size=size)
        try:
            handle = await self._runtime_of(sandbox).exec(sandbox.id, process)
        except (CommandStartError, RuntimeFailure) as exc:
            if await self._not_running(sandbox):
                raise self._ended(sandbox) from None
            raise SshUnavailableError(f"cannot open a terminal in {sandbox_id}: {exc.message}",
                                      details={"sandboxId": sandbox_id}) from exc
        session = shell.ShellSession(handle, kill_grace=self._settings.kill_grace_seconds)
        # (Under gVisor the PTY is the host's, out of the sandbox's sight: left as it is.)
        if self._acts_as_users and handle.console is not None and sandbox.params.runtime != "runsc":
            try:
                shell.give_terminal(handle.console, self._isolation.host_ids(who.uid, who.gid)[0])
            except OSError as exc:  # the shell works without it; programs reopening it may not
                log.warning("cannot give the terminal of %s to %s: %s", sandbox_id, who.name, exc)
        return session

    # --- restart ---------------------------------------------------------------

    async def load(self) -> None:
        """Find the sandboxes an earlier agent left: keep the running ones, mark the
        rest stopped, and remove runtime containers and directories nobody owns."""
        containers = {name: {c.id: c for c in await runtime.list()}
                      for name, runtime in self._runtimes.items()}
        known: set[str] = set()
        if self._dir.is_dir():
            for directory in sorted(self._dir.iterdir()):
                known.add(directory.name)
                await self._adopt(directory, containers)
        for name, found in containers.items():
            for container_id in found.keys() - known:
                if is_sandbox_id(container_id):
                    log.warning("deleting %s container %s: no sandbox directory",
                                name, container_id)
                    await self._runtimes[name].delete(container_id)
        # The network keeps the sandboxes held here and removes its other leftovers.
        attachments = await self._network.start(set(self._sandboxes))
        for sandbox_id, sandbox in self._sandboxes.items():
            attachment = attachments.get(sandbox_id)
            sandbox.address = attachment.address if attachment else None

    async def _adopt(self, directory: Path,
                     containers: dict[str, dict[str, ContainerState]]) -> None:
        sandbox_id = directory.name
        try:
            sandbox = Sandbox.load(directory)
            if sandbox.id != sandbox_id:
                raise ValueError("state file names another sandbox")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("removing %s: unreadable %s (%s)", directory, STATE_FILE, exc)
            if is_sandbox_id(sandbox_id):
                for runtime in self._runtimes.values():
                    await runtime.delete(sandbox_id)
            # Through the filesystem: its rootfs may still be mounted.
            await asyncio.to_thread(self._fs.release, directory)
            return
        if sandbox.params.build:
            # Its build ended with the agent that ran it: nobody can commit it now.
            log.warning("removing the sandbox %s of an interrupted template build", sandbox_id)
            await self._teardown(sandbox_id, directory)
            return
        container = containers.get(sandbox.params.runtime, {}).get(sandbox_id)
        alive = container is not None and container.status in (ContainerStatus.RUNNING,
                                                               ContainerStatus.PAUSED)
        if sandbox.status is SandboxStatus.RUNNING and alive and self._fs.is_ready(directory):
            self._sandboxes[sandbox_id] = sandbox
            self._attach(sandbox)
            return
        if sandbox.status is not SandboxStatus.STOPPED:
            sandbox.status = SandboxStatus.STOPPED
            sandbox.exit_reason = sandbox.exit_reason or (
                "boot interrupted" if sandbox.booted_at is None
                else f"lost: runtime {sandbox.params.runtime} is not available"
                if sandbox.params.runtime not in self._runtimes
                else "lost: its init is gone (agent or host restarted)")
            sandbox.save()
        self._sandboxes[sandbox_id] = sandbox

    async def close(self) -> None:
        """Stop watching (on agent shutdown); sandboxes keep running."""
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
        # Closing a kernel host's stdin makes it shut its kernels down.
        await self.interpreters.close()
        await self._network.close()
