"""The code interpreter: access and template checks here, kernels in the sandbox (via its agent).

The agent answers an execution as a stream of CodeEvents (WIRE_PROTOCOL
§5.1), one JSON object per line; the router turns it into the unary answer
or into SSE, and closes the agent call however that ends (the agent then
interrupts a cell still running). ``Execution`` is the pure aggregation step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qbox.core.errors import CodeInterpreterDisabledError, InvalidArgumentError
from qbox.server.agents import AgentClient, Relayed
from qbox.server.db.tables import Sandbox, Template
from qbox.server.services.context import ServiceContext
from qbox.server.principal import Principal
from qbox.server.services.sandboxes import SandboxService
from qbox.server.services.templates import has_code_interpreter

log = logging.getLogger("qbox.code")
T = TypeVar("T")

# An execution the interpreter stopped answering about: reported, never hung.
INTERRUPTED_ERROR = {"name": "InterpreterError",
                     "value": "the code interpreter stopped before the execution completed",
                     "traceback": []}


@dataclass
class Execution:
    """The unary answer to code-execute, built from its events in order."""

    context_id: str = ""
    language: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    execution_ms: int = 0
    timed_out: bool = False
    complete: bool = False

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "started":
            self.context_id = str(event.get("contextId", ""))
            self.language = str(event.get("language", ""))
        elif kind == "output" and isinstance(event.get("output"), dict):
            self.outputs.append(event["output"])
        elif kind == "result" and isinstance(event.get("result"), dict):
            self.result = event["result"]
        elif kind == "error" and isinstance(event.get("error"), dict):
            self.error = event["error"]
        elif kind == "complete":
            self.execution_ms = int(event.get("executionMs", 0))
            self.timed_out = bool(event.get("timedOut", False))
            self.complete = True

    def to_wire(self) -> dict[str, Any]:
        error = self.error if self.complete else (self.error or INTERRUPTED_ERROR)
        return {"contextId": self.context_id, "language": self.language, "outputs": self.outputs,
                "result": self.result, "error": error, "executionMs": self.execution_ms,
                "timedOut": self.timed_out}


async def events_of(lines: AsyncIterator[bytes]) -> AsyncGenerator[dict[str, Any], None]:
    """CodeEvents from the agent's NDJSON lines (anything else is logged and skipped)."""
    async for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("code interpreter sent a line that is not JSON: %.200r", line)
            continue
        if isinstance(event, dict) and isinstance(event.get("kind"), str):
            yield event


def _enabled(sandbox: Sandbox, template: Template | None) -> None:
    if not has_code_interpreter(template):
        raise CodeInterpreterDisabledError(
            f"sandbox {sandbox.id}'s template {sandbox.template_id} has no code interpreter "
            "(no Jupyter kernels in its image)",
            details={"sandboxId": sandbox.id, "templateId": sandbox.template_id})


class CodeService:
    def __init__(self, ctx: ServiceContext, sandboxes: SandboxService) -> None:
        self.ctx = ctx
        self.sandboxes = sandboxes

    async def _relay(self, principal: Principal, sandbox_id: str,
                     call: Callable[[AgentClient], Awaitable[T]]) -> T:
        return await self.sandboxes.relay(principal, sandbox_id, call, check=_enabled)

    async def languages(self, principal: Principal, sandbox_id: str) -> dict[str, Any]:
        return await self._relay(principal, sandbox_id, lambda a: a.code_languages(sandbox_id))

    async def contexts(self, principal: Principal, sandbox_id: str) -> dict[str, Any]:
        return await self._relay(principal, sandbox_id, lambda a: a.code_contexts(sandbox_id))

    async def create_context(self, principal: Principal, sandbox_id: str,
                             body: dict[str, Any]) -> dict[str, Any]:
        return await self._relay(principal, sandbox_id,
                                 lambda a: a.create_code_context(sandbox_id, body))

    async def restart_context(self, principal: Principal, sandbox_id: str,
                              context_id: str) -> dict[str, Any]:
        return await self._relay(principal, sandbox_id,
                                 lambda a: a.restart_code_context(sandbox_id, context_id))

    async def delete_context(self, principal: Principal, sandbox_id: str, context_id: str) -> None:
        await self._relay(principal, sandbox_id,
                          lambda a: a.delete_code_context(sandbox_id, context_id))

    async def execute(self, principal: Principal, sandbox_id: str,
                      body: dict[str, Any]) -> Relayed:
        """The execution's NDJSON lines from the agent (``events_of`` reads them); errors
        before the first (access, template, language, context, a kernel still starting) are
        raised. Close it however the answer ends: the agent interrupts an execution whose
        call is closed before ``complete``."""
        if body.get("contextId") and body.get("language"):
            raise InvalidArgumentError("give contextId or language, not both",
                                       details={"contextId": body["contextId"],
                                                "language": body["language"]})
        return await self._relay(principal, sandbox_id, lambda a: a.code_execute(sandbox_id, body))
