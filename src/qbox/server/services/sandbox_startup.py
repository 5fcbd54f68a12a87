"""A template's start and ready commands, run while its sandbox boots.

``startCmd`` runs in the background as the template's user; its output lines
go to the sandbox log (component ``start_cmd``: stdout as ``info``, stderr as
``error``), capped, then its exit. ``readyCmd`` is run every half second
until it exits 0; the sandbox is ``running`` only then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from qbox.core.errors import QboxError, SandboxNotFoundError
from qbox.server.agents import AgentClient
from qbox.server.db.tables import Template
from qbox.server.services import events
from qbox.server.services.context import ServiceContext

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

    def shell(self, command: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"cmd": "/bin/sh", "args": ["-c", command], **extra}
        if self.user:
            body["user"] = self.user
        return body


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
    ended: dict[str, Any] | None = None
    try:
        stream = await agent.follow_command(sandbox_id, pid, {})
        async for raw in stream:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            kind = event.get("type")
            if kind in ("stdout", "stderr"):
                await _record(ctx, sandbox_id, lines.feed(kind, str(event.get("data", ""))))
            elif kind == "exit":
                ended = event
    except QboxError as exc:
        # The sandbox ended under it: nothing more to follow.
        log.info("start command of %s no longer followed: %s", sandbox_id, exc.message)
    entries = lines.finish()
    if ended is not None:
        if ended.get("signal"):
            entries.append(("error", f"start command killed by signal {ended['signal']}"))
        else:
            code = ended.get("exitCode")
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
            result = await agent.exec(sandbox_id, plan.shell(plan.ready_cmd, timeoutSeconds=timeout))
        except SandboxNotFoundError:
            return "sandbox ended before readyCmd exited 0"
        except QboxError as exc:
            last = f"error: {exc.message}"
        else:
            if result.get("exitCode") == 0 and not result.get("timedOut"):
                return None
            last = (f"timed out after {timeout}s" if result.get("timedOut")
                    else f"exit code {result.get('exitCode')}")
            tail = (str(result.get("stdout") or "") + str(result.get("stderr") or "")).strip()
            if tail:
                last += f": {tail[-_TAIL_CHARS:]}"
        await asyncio.sleep(max(0.0, min(READY_INTERVAL_SECONDS, deadline - loop.time())))
