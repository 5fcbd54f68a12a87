"""The code interpreter: access and template checks here, kernels in the sandbox (via its agent).

The agent answers an execution as a stream of CodeEvents (WIRE_PROTOCOL
§5.1), one JSON object per line; the router turns it into the unary answer
or into SSE, and closes the agent call however that ends (the agent then
interrupts a cell still running). ``Execution`` is the pure aggregation step.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pydantic

from qbox.core.errors import CodeInterpreterDisabledError, InvalidArgumentError
from qbox.protocol.code import (
    CODE_EVENT,
    CodeError,
    CodeEventBody,
    CodeExecute,
    CodeOutput,
    CompleteCodeEvent,
    Context,
    ContextCreate,
    ErrorCodeEvent,
    Languages,
    MimeBundle,
    OutputCodeEvent,
    ResultCodeEvent,
    StartedCodeEvent,
)
from qbox.server.agent_client import AgentClient, Relayed
from qbox.server.db.tables import Sandbox, Template
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.sandboxes import SandboxService
from qbox.server.services.template_builds import has_code_interpreter

log = logging.getLogger("qbox.code")
T = TypeVar("T")


@dataclass
class Execution:
    """An execution's events gathered in order, for the unary answer."""

    context_id: str = ""
    language: str = ""
    outputs: list[CodeOutput] = field(default_factory=list)
    result: MimeBundle | None = None
    error: CodeError | None = None
    execution_ms: int = 0
    timed_out: bool = False
    complete: bool = False

    def add(self, event: CodeEventBody) -> None:
        if isinstance(event, StartedCodeEvent):
            self.context_id, self.language = event.context_id, event.language
        elif isinstance(event, OutputCodeEvent):
            self.outputs.append(event.output)
        elif isinstance(event, ResultCodeEvent):
            self.result = event.result
        elif isinstance(event, ErrorCodeEvent):
            self.error = event.error
        elif isinstance(event, CompleteCodeEvent):
            self.execution_ms, self.timed_out = event.execution_ms, event.timed_out
            self.complete = True


async def events_of(lines: AsyncIterator[bytes]) -> AsyncGenerator[CodeEventBody, None]:
    """CodeEvents from the agent's NDJSON lines (anything else is logged and skipped)."""
    async for line in lines:
        try:
            yield CODE_EVENT.validate_json(line)
        except pydantic.ValidationError:
            log.warning("code interpreter sent a line that is no CodeEvent: %.200r", line)


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

    async def languages(self, principal: Principal, sandbox_id: str) -> Languages:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.code.languages(sandbox_id))

    async def contexts(self, principal: Principal, sandbox_id: str) -> list[Context]:
        found = await self._relay(principal, sandbox_id,
                                  lambda agent: agent.code.contexts(sandbox_id))
        return found.contexts

    async def create_context(self, principal: Principal, sandbox_id: str,
                             request: ContextCreate) -> Context:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.code.create_context(sandbox_id, request))

    async def restart_context(self, principal: Principal, sandbox_id: str,
                              context_id: str) -> Context:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.code.restart_context(sandbox_id, context_id))

    async def delete_context(self, principal: Principal, sandbox_id: str, context_id: str) -> None:
        await self._relay(principal, sandbox_id,
                          lambda agent: agent.code.delete_context(sandbox_id, context_id))

    async def execute(self, principal: Principal, sandbox_id: str,
                      request: CodeExecute) -> Relayed:
        """The execution's NDJSON lines from the agent (``events_of`` reads them); errors
        before the first (access, template, language, context, a kernel still starting) are
        raised. Close it however the answer ends: the agent interrupts an execution whose
        call is closed before ``complete``."""
        if request.context_id and request.language:
            raise InvalidArgumentError("give contextId or language, not both",
                                       details={"contextId": request.context_id,
                                                "language": request.language})
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.code.execute(sandbox_id, request))
