"""The sandboxes of this host: create, watch, exec into, delete, and find again after a restart.

Create is the hot path (target: well under 150 ms through the HTTP API): the
bundle (bundle.py), then one ``crun run --detach``. A sandbox's state changes
only through lifecycle.py; restart adoption is adoption.py; commands and
shells start in running_sandbox.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from qbox.agent import adoption, as_user, cgroups, shell
from qbox.agent.bundle import BundleBuilder
from qbox.agent.files import SandboxFiles
from qbox.agent.idmap import IdMapping
from qbox.agent.interpreter.manager import CodeInterpreter, CodeInterpreters
from qbox.agent.isolation import NO_ISOLATION, IsolationPolicy
from qbox.agent.lifecycle import DELETED_REASON, SandboxEvent, advance, init_exit_reason
from qbox.agent.network import NoNetwork, SandboxNetwork
from qbox.agent.processes import ExecResult, ProcessManager, ProcessRecord
from qbox.agent.rootfs import SandboxFilesystem
from qbox.agent.runtime.base import ConsoleSize, RuntimeDriver
from qbox.agent.runtime.registry import Runtimes
from qbox.agent.running_sandbox import RunningSandbox, ended
from qbox.agent.sandbox import Sandbox, SandboxParams, SandboxStatus
from qbox.agent.sandbox_images import ImageSource, image_config_env, image_layers
from qbox.agent.settings import AgentSettings
from qbox.core.errors import (
    ConflictError,
    SandboxNotActiveError,
    SandboxNotFoundError,
    ValidationError,
)
from qbox.core.ids import is_sandbox_id
from qbox.core.timefmt import utcnow

log = logging.getLogger("qbox.agent.sandboxes")


class SandboxManager:
    """Every sandbox of this host by id; the one door to them for the routes and builds."""

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
        self._running: dict[str, RunningSandbox] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._image_envs: dict[str, dict[str, str]] = {}
        # Jupyter kernels per sandbox (interpreter/): started at boot for an eager sandbox,
        # on the first code call for a lazy one.
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
            raise ended(sandbox)
        if sandbox.status is not SandboxStatus.RUNNING:
            raise SandboxNotActiveError(f"sandbox {sandbox_id} is {sandbox.status.value}",
                                        details={"currentState": sandbox.status.value})
        return sandbox

    @property
    def runtime_names(self) -> list[str]:
        return self._runtimes.names

    def _running_of(self, sandbox_id: str) -> RunningSandbox:
        """The running sandbox behind an id; refused (404, 409) unless it runs."""
        self._active(sandbox_id)
        return self._running[sandbox_id]

    def processes(self, sandbox_id: str) -> ProcessManager:
        return self._running_of(sandbox_id).processes

    def code(self, sandbox_id: str) -> CodeInterpreter:
        self._active(sandbox_id)
        return self.interpreters.get(sandbox_id)

    @property
    def id_mapping(self) -> IdMapping | None:
        """The user namespace's id shift of every sandbox's files (None: host ids)."""
        return self._isolation.mapping

    @property
    def network(self) -> SandboxNetwork:
        """Sandbox networks: a Dockerfile build gets one too (images/dockerfile_build.py)."""
        return self._network

    @property
    def cgroup_parent(self) -> str:
        """This agent's cgroup subtree (a Dockerfile build's cgroup is made in it)."""
        return self._isolation.cgroup_parent

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

    async def create(self, params: SandboxParams, deadline_at: datetime | None = None) -> Sandbox:
        params.validate()
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
            sandbox = Sandbox(params, directory, utcnow(), image_env=dict(image_env),
                              deadline_at=deadline_at)
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
        running = RunningSandbox(sandbox, self._runtimes.of(sandbox), self._isolation,
                                 self._settings)
        self._running[sandbox.id] = running
        running.watcher = asyncio.create_task(self._watch(sandbox))
        self.interpreters.attach(sandbox.id, sandbox.rootfs, running.spawn_kernel_host,
                                 eager=sandbox.params.code_interpreter == "eager")

    async def _watch(self, sandbox: Sandbox) -> None:
        """Mark the sandbox stopped when its init exits (not through delete)."""
        try:
            init_status = await self._runtimes.of(sandbox).wait(sandbox.id)
        except Exception:  # noqa: BLE001 - a broken watcher must not take the agent down
            log.exception("watching sandbox %s failed", sandbox.id)
            return
        if self._sandboxes.get(sandbox.id) is not sandbox:
            return
        reason = init_exit_reason(init_status, self._isolation.oom_counter(sandbox.id)())
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

    async def end(self, sandbox_id: str, event: SandboxEvent, reason: str) -> bool:
        """End a running sandbox on the agent's own decision (its deadline, a fence): its
        processes go, its files stay until the control plane deletes it, and why it ended
        is saved. False when it was not running (any more)."""
        async with self._locked(sandbox_id):
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None or sandbox.status is not SandboxStatus.RUNNING:
                return False
            advance(sandbox, event, reason)
            sandbox.save()
            await self._teardown(sandbox_id, sandbox.directory, [self._runtimes.of(sandbox)],
                                 keep_filesystem=True)
            return True

    # --- claim -------------------------------------------------------------------

    async def claim(self, sandbox_id: str, envs: dict[str, str], vcpus: int, memory_mb: int,
                    deadline_at: datetime | None) -> Sandbox:
        """A booted sandbox becomes a request's (a warm pool's claim): its cgroup limits
        shrink to ``vcpus``/``memory_mb``, ``envs`` replace the boot envs for every later
        command, shell and code execution, and its deadline is set; all saved. Growing a
        limit is refused (validation_error): the host counted the sandbox at its boot size."""
        async with self._locked(sandbox_id):
            sandbox = self._active(sandbox_id)
            params = sandbox.params
            too_big = {name: f"at most the boot value ({boot})" for name, asked, boot in (
                ("vcpus", vcpus, params.vcpus), ("memoryMb", memory_mb, params.memory_mb))
                if asked > boot}
            if too_big:
                raise ValidationError.for_fields(too_big, "a claim cannot grow the limits")
            claimed = dataclasses.replace(params, envs=dict(envs), vcpus=vcpus,
                                          memory_mb=memory_mb)
            claimed.validate()
            await asyncio.to_thread(self._apply_limits, sandbox_id,
                                    vcpus if vcpus != params.vcpus else None,
                                    memory_mb if memory_mb != params.memory_mb else None)
            sandbox.deadline_at = deadline_at
            self._replace_params(sandbox, claimed)
            return sandbox

    async def set_envs(self, sandbox_id: str, envs: dict[str, str]) -> Sandbox:
        """``envs`` become the whole env of the sandbox's later commands, shells and code
        executions (the envs API), saved like a claim's."""
        async with self._locked(sandbox_id):
            sandbox = self._active(sandbox_id)
            changed = dataclasses.replace(sandbox.params, envs=dict(envs))
            changed.validate()
            self._replace_params(sandbox, changed)
            return sandbox

    def _replace_params(self, sandbox: Sandbox, params: SandboxParams) -> None:
        """New params (a claim's, or new envs) saved; a kernel host already running gets the
        envs with its later requests (CodeInterpreter.replace_env)."""
        sandbox.params = params
        sandbox.save()
        interpreter = self.interpreters.find(sandbox.id)
        if interpreter is not None:
            interpreter.replace_env(params.envs)

    def _apply_limits(self, sandbox_id: str, vcpus: int | None, memory_mb: int | None) -> None:
        """Write the limits that change (None: stays); a limit with no file to hold it is
        refused (409), never left at the boot value: the claim then fails, and the control
        plane boots the request cold."""
        cgroup = f"{self._isolation.cgroup_parent}/{sandbox_id}"
        missing: list[str] = []
        try:
            if memory_mb is not None and not cgroups.set_memory_limit(cgroup, memory_mb):
                missing.append("memory")
            if vcpus is not None and not cgroups.set_cpu_limit(cgroup, vcpus):
                missing.append("cpu")
        except OSError as exc:
            # v1 refuses a memory limit below what it cannot reclaim (EBUSY).
            raise ConflictError(f"cannot lower the limits of sandbox {sandbox_id}: "
                                f"{exc.strerror or exc}",
                                details={"sandboxId": sandbox_id}) from exc
        if missing:
            raise ConflictError(f"sandbox {sandbox_id} has no {' or '.join(missing)} cgroup "
                                f"({cgroup}) to lower its limits in",
                                details={"sandboxId": sandbox_id})

    # --- deadlines ---------------------------------------------------------------

    def set_deadline(self, sandbox_id: str, deadline_at: datetime | None) -> None:
        """The sandbox's new deadline (its timeout changed on the control plane), saved."""
        sandbox = self.get(sandbox_id)
        if sandbox.deadline_at != deadline_at:
            sandbox.deadline_at = deadline_at
            sandbox.save()

    def apply_deadlines(self, deadlines: Mapping[str, datetime | None]) -> None:
        """The deadlines a control plane holds for this host's sandboxes; a sandbox it does
        not list keeps its own (a create may be on its way while the list was made)."""
        for sandbox in self:
            if sandbox.id in deadlines and sandbox.status is SandboxStatus.RUNNING:
                try:
                    self.set_deadline(sandbox.id, deadlines[sandbox.id])
                except OSError:
                    log.warning("cannot save the deadline of %s", sandbox.id, exc_info=True)

    async def _teardown(self, sandbox_id: str, directory: Path,
                        runtimes: list[RuntimeDriver] | None = None, *,
                        keep_filesystem: bool = False) -> None:
        """Every step runs even when an earlier one fails, so one error never strands the rest
        (mounts, loop devices, the netns); the first error is raised at the end. With
        ``keep_filesystem`` only the processes end (the rootfs, disk and netns stay)."""
        running = self._running.pop(sandbox_id, None)
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
        await step(functools.partial(self._remove_cgroup, sandbox_id))
        if running is not None:
            await step(running.processes.close)
        await step(functools.partial(self.interpreters.detach, sandbox_id))
        if running is not None and running.watcher is not None:
            running.watcher.cancel()
        if not keep_filesystem:
            if directory.exists():
                await step(lambda: asyncio.to_thread(self._fs.release, directory))
            await step(lambda: self._network.detach(sandbox_id))
        if errors:
            raise errors[0]

    async def _remove_cgroup(self, sandbox_id: str) -> None:
        """The sandbox's cgroup goes with it, even where the runtime's delete left it (a fork
        bomb can outrun crun's kill on cgroup v1)."""
        cgroup = f"{self._isolation.cgroup_parent}/{sandbox_id}"
        if not await asyncio.to_thread(cgroups.remove_sandbox, cgroup):
            raise RuntimeError(f"the cgroup {cgroup} of {sandbox_id} could not be removed")

    # --- commands --------------------------------------------------------------

    async def start_command(self, sandbox_id: str, argv: list[str], *,
                            env: dict[str, str] | None = None, cwd: str | None = None,
                            user: str | None = None, stdin: str | None = None,
                            keep_stdin: bool = False,
                            ephemeral: bool = False) -> ProcessRecord:
        """Start a command; ``ephemeral`` for a streamed /exec (see ProcessManager.start)."""
        return await self._running_of(sandbox_id).start_command(
            argv, env=env, cwd=cwd, user=user, stdin=stdin, keep_stdin=keep_stdin,
            ephemeral=ephemeral)

    async def exec(self, sandbox_id: str, argv: list[str], *, env: dict[str, str] | None = None,
                   cwd: str | None = None, user: str | None = None, stdin: str | None = None,
                   timeout: float | None = None) -> ExecResult:
        return await self._running_of(sandbox_id).exec(argv, env=env, cwd=cwd, user=user,
                                                       stdin=stdin, timeout=timeout)

    async def open_shell(self, sandbox_id: str, size: ConsoleSize, *, command: str | None = None,
                         user: str | None = None) -> shell.ShellSession:
        """The user's login shell on a PTY (running ``command`` if given), like an ssh login:
        as that user, in their home, with the sandbox's env plus TERM and SHELL."""
        return await self._running_of(sandbox_id).open_shell(size, command=command, user=user)

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
        for running in self._running.values():
            if running.watcher is not None:
                running.watcher.cancel()
        # Closing a kernel host's stdin makes it shut its kernels down.
        await self.interpreters.close()
        await self._network.close()
