"""A code context as the agent tracks it: one kernel in the sandbox, known by its id.

The kernel host knows contexts only while it runs; the agent keeps what a
client sees (id, language, cwd, times) and the state, which it derives from
what the host reported.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from qbox.agent.interpreter.host import KernelHost
from qbox.core.timefmt import utcnow


class ContextState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


def new_context_id() -> str:
    return "ctx_" + secrets.token_hex(8)


@dataclass(eq=False)
class Context:
    id: str
    language: str
    kernel_name: str
    cwd: str
    is_default: bool
    created_at: datetime = field(default_factory=utcnow)
    last_used_at: datetime | None = None
    # Executions sent and not finished yet (the host queues them per context).
    running: int = 0
    # Why the kernel is gone (it died, or its host did); None while it lives.
    dead_reason: str | None = None
    # The host the kernel runs in, and the start (or restart) under way or done.
    host: KernelHost | None = None
    started: asyncio.Task[None] | None = None
    # Bumped by every (re)start: answers about an earlier kernel change nothing.
    generation: int = 0

    @property
    def state(self) -> ContextState:
        if self.started is None or not self.started.done():
            return ContextState.STARTING
        if self.dead_reason is not None:
            return ContextState.DEAD
        return ContextState.BUSY if self.running else ContextState.IDLE

