"""A sandbox's boot: create it on its host, then the template's start and ready commands.

A spawn hands the boot to a background task here; the task ends the boot
through the lifecycle (``booted``, or why it failed). ``startCmd`` runs in
the background as the template's user; its output lines go to the sandbox
log (component ``start_cmd``: stdout as ``info``, stderr as ``error``),
capped, then its exit. ``readyCmd`` is run every half second until it
exits 0; the sandbox is ``running`` only then.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pydantic

from qbox.core.errors import HostNoCapacityError, QboxError, SandboxNotFoundError
from qbox.core.states import SandboxState
from qbox.protocol.processes import (
    COMMAND_EVENT,
    CommandStart,
    ExecRequest,
    ExitEvent,
    LogOffsets,
    OutputEvent,
)
from qbox.protocol.sandboxes import SandboxSpec
from qbox.server.agent_client import AgentClient
from qbox.server.db.tables import Sandbox, Template
from qbox.server.services import events
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import Change, LifecycleEvent, SandboxLifecycle

log = logging.getLogger("qbox.sandboxes")

COMPONENT = "start_cmd"
MAX_LOGGED_LINES = 1000
READY_INTERVAL_SECONDS = 0.5
READY_EXEC_MAX_SECONDS = 10
_TAIL_CHARS = 200


@dataclass(frozen=True)
class StartPlan:
    start_cmd: str | None = None
    ready_cmd: str | None = None
    ready_timeout_s: int = 30
    user: str | None = None

    @classmethod
    def of(cls, template: Template) -> StartPlan:
        return cls(start_cmd=template.start_cmd, ready_cmd=template.ready_cmd,
                   ready_timeout_s=template.ready_timeout_s, user=template.default_user)

    def start(self, command: str) -> CommandStart:
        return CommandStart(cmd="/bin/sh", args=["-c", command], user=self.user or None)

    def check(self, command: str, timeout: int) -> ExecRequest:
        return ExecRequest(cmd="/bin/sh", args=["-c", command], user=self.user or None,
                           timeout_seconds=timeout)


class OutputLines:
    """Splits a command's output chunks into log lines, per stream, up to a cap."""

    def __init__(self, max_lines: int = MAX_LOGGED_LINES) -> None:
        self.max_lines = max_lines
        self.logged = 0
        self.dropped = 0
        self._partial = {"stdout": "", "stderr": ""}

    def feed(self, stream: str, data: str) -> list[tuple[str, str]]:
        text = self._partial.get(stream, "") + data
        *complete, self._partial[stream] = text.split("\n")
        return self._take(stream, complete)

    def finish(self) -> list[tuple[str, str]]:
        entries: list[tuple[str, str]] = []
        for stream, rest in self._partial.items():
            if rest:
                entries += self._take(stream, [rest])
            self._partial[stream] = ""
        return entries

    def _take(self, stream: str, lines: list[str]) -> list[tuple[str, str]]:
        level = "error" if stream == "stderr" else "info"
        entries: list[tuple[str, str]] = []
        for line in lines:
            line = line.removesuffix("\r")
            if self.logged < self.max_lines:
                self.logged += 1
                entries.append((level, line))
                continue
            if self.dropped == 0:
                entries.append(("info", f"start command output over {self.max_lines} lines; "
                                        "the rest is not logged"))
            self.dropped += 1
        return entries


async def _record(ctx: ServiceContext, sandbox_id: str, entries: list[tuple[str, str]]) -> None:
    if not entries:
        return
    async with ctx.sessions() as session:
        for level, message in entries:
            events.record(session, sandbox_id, message, level=level, component=COMPONENT)
        await session.commit()


async def follow_start_command(ctx: ServiceContext, agent: AgentClient, sandbox_id: str,
                               pid: int) -> None:
    """Copy the start command's output into the sandbox log until it (or the sandbox) ends."""
    lines = OutputLines()
    ended: ExitEvent | None = None
    try:
        stream = await agent.processes.follow(sandbox_id, pid, LogOffsets())
        async for raw in stream:
            try:
                event = COMMAND_EVENT.validate_json(raw)
            except pydantic.ValidationError:
                continue
            if isinstance(event, OutputEvent):
                await _record(ctx, sandbox_id, lines.feed(event.type, event.data))
            elif isinstance(event, ExitEvent):
                ended = event
    except QboxError as exc:
        # The sandbox ended under it: nothing more to follow.
        log.info("start command of %s no longer followed: %s", sandbox_id, exc.message)
    entries = lines.finish()
    if ended is not None:
        if ended.signal:
            entries.append(("error", f"start command killed by signal {ended.signal}"))
        else:
            code = ended.exit_code
            entries.append(("info" if code == 0 else "error",
                            f"start command exited with code {code}"))
    await _record(ctx, sandbox_id, entries)


async def wait_ready(agent: AgentClient, sandbox_id: str, plan: StartPlan,
                     still_booting: Callable[[], Awaitable[bool]]) -> str | None:
    """None once ``readyCmd`` exited 0 (or the sandbox stopped booting); else why not."""
    assert plan.ready_cmd is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.ready_timeout_s
    last = "it never ran"
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return f"readyCmd did not exit 0 within {plan.ready_timeout_s}s (last: {last})"
        if not await still_booting():
            return None
        timeout = min(READY_EXEC_MAX_SECONDS, max(1, math.ceil(remaining)))
        try:
            result = await agent.processes.exec(sandbox_id, plan.check(plan.ready_cmd, timeout))
        except SandboxNotFoundError:
            return "sandbox ended before readyCmd exited 0"
        except QboxError as exc:
            last = f"error: {exc.message}"
        else:
            if result.exit_code == 0 and not result.timed_out:
                return None
            last = (f"timed out after {timeout}s" if result.timed_out
                    else f"exit code {result.exit_code}")
            tail = (result.stdout + result.stderr).strip()
            if tail:
                last += f": {tail[-_TAIL_CHARS:]}"
        await asyncio.sleep(max(0.0, min(READY_INTERVAL_SECONDS, deadline - loop.time())))


class SandboxBoots:
    """The boots in flight in this process, and the start commands they left running."""

    def __init__(self, ctx: ServiceContext, lifecycle: SandboxLifecycle) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle
        self._boots: dict[str, asyncio.Task[None]] = {}
        # Followers of the templates' start commands, by sandbox.
        self._followers: dict[str, asyncio.Task[None]] = {}
        # Moves a boot whose host refused it for want of room to another host (its new id).
        self.relocate: Callable[[str, str], Awaitable[str | None]] | None = None

    def start(self, sandbox_id: str, host_id: str, spec: SandboxSpec,
              plan: StartPlan) -> asyncio.Task[None]:
        task = asyncio.create_task(self._boot(sandbox_id, host_id, spec, plan),
                                   name=f"boot {sandbox_id}")
        self._boots[sandbox_id] = task
        task.add_done_callback(functools.partial(_forget, self._boots, sandbox_id))
        return task

    async def _boot(self, sandbox_id: str, host_id: str, spec: SandboxSpec,
                    plan: StartPlan) -> None:
        try:
            agent, host_id = await self._create(host_id, spec)
            failure = await self._start(agent, sandbox_id, plan)
        except asyncio.CancelledError:
            await self.lifecycle.apply(sandbox_id, Change.of(LifecycleEvent.BOOT_INTERRUPTED))
            raise
        except QboxError as exc:
            log.warning("boot of %s failed: %s", sandbox_id, exc.message)
            await self.lifecycle.apply(sandbox_id, Change.of(LifecycleEvent.BOOT_FAILED,
                                                             error=exc.message))
            return
        except Exception as exc:  # noqa: BLE001 - any failure must end in `failed`, never a hang
            log.exception("boot of %s crashed", sandbox_id)
            await self.lifecycle.apply(sandbox_id, Change.of(LifecycleEvent.BOOT_FAILED,
                                                             error=str(exc)))
            return
        if failure is not None:
            self.stop_following(sandbox_id)
            await self.lifecycle.apply(sandbox_id, failure)
            await self.lifecycle.remove_from_host(sandbox_id, host_id)
            return
        if not await self.lifecycle.apply(sandbox_id, Change.of(LifecycleEvent.BOOTED)):
            # Killed while booting: the container exists now, so remove it.
            self.stop_following(sandbox_id)
            await self.lifecycle.remove_from_host(sandbox_id, host_id)

    async def _create(self, host_id: str, spec: SandboxSpec) -> tuple[AgentClient, str]:
        """Create the sandbox on its host; if the host is fuller than its last report said,
        once more on another host with room."""
        try:
            agent = self.ctx.agents.for_host(host_id)
            await agent.sandboxes.create(spec)
            return agent, host_id
        except HostNoCapacityError as exc:
            moved = await self.relocate(spec.id, host_id) if self.relocate else None
            if moved is None:
                raise
            log.info("host %s refused %s (%s); trying host %s", host_id, spec.id, exc.message, moved)
        agent = self.ctx.agents.for_host(moved)
        await agent.sandboxes.create(spec)
        return agent, moved

    async def _start(self, agent: AgentClient, sandbox_id: str, plan: StartPlan) -> Change | None:
        """Start the template's startCmd, wait for its readyCmd; None when ready, else why not."""
        if plan.start_cmd:
            try:
                started = await agent.processes.start(sandbox_id, plan.start(plan.start_cmd))
            except QboxError as exc:
                return Change.of(LifecycleEvent.START_COMMAND_FAILED, error=exc.message)
            task = asyncio.create_task(
                follow_start_command(self.ctx, agent, sandbox_id, started.pid),
                name=f"start command {sandbox_id}")
            self._followers[sandbox_id] = task
            task.add_done_callback(functools.partial(_forget, self._followers, sandbox_id))
        if not plan.ready_cmd:
            return None

        async def still_booting() -> bool:
            async with self.ctx.sessions() as session:
                sandbox = await session.get(Sandbox, sandbox_id)
                return sandbox is not None and sandbox.status == SandboxState.BOOTING
        why = await wait_ready(agent, sandbox_id, plan, still_booting)
        return None if why is None else Change.of(LifecycleEvent.NEVER_READY, why=why)

    def stop_following(self, sandbox_id: str) -> None:
        """Stop copying the start command's output (its sandbox ended or never booted)."""
        task = self._followers.pop(sandbox_id, None)
        if task is not None:
            task.cancel()

    async def shutdown(self) -> None:
        tasks = [*self._boots.values(), *self._followers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _forget(tasks: dict[str, asyncio.Task[None]], sandbox_id: str, task: asyncio.Task[None]) -> None:
    if tasks.get(sandbox_id) is task:
        del tasks[sandbox_id]
