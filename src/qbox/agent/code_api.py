"""The agent's code-interpreter routes (docs/agent-protocol.md, "Code"): thin handlers over
the sandbox's ``CodeInterpreter`` (interpreter/manager.py).

An execution answers NDJSON: one CodeEvent per line (WIRE_PROTOCOL.md §5.1),
``complete`` last, then the response ends. Errors found before the first
event (no kernels, an unknown language or context, a dead context, kernels
still starting) are ordinary JSON errors with their status. A caller that
goes away before ``complete`` cancels the execution: the kernel is
interrupted (as on a timeout) and the context stays usable.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from qbox.agent import spec as specs
from qbox.agent.command_stream import NDJSON
from qbox.agent.interpreter.manager import CodeInterpreter, CodeRun
from qbox.agent.sandboxes import SandboxManager


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ContextCreate(_Wire):
    language: str | None = None
    cwd: str | None = None


class CodeExecute(_Wire):
    code: str
    context_id: str | None = None
    language: str | None = None
    env: dict[str, str] | None = None
    # Clients send whole seconds (0.5 arrives as 0): 0 or none means no limit.
    timeout_seconds: float | None = Field(None, ge=0)


async def _lines(run: CodeRun) -> AsyncIterator[bytes]:
    async for event in run:
        yield json.dumps(event, ensure_ascii=False).encode() + b"\n"


class _RunResponse(StreamingResponse):
    """An execution's events as NDJSON; however the response ends (sent, client gone,
    even before the first line) an execution that has not completed is cancelled."""

    def __init__(self, run: CodeRun) -> None:
        super().__init__(_lines(run), media_type=NDJSON,
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._run.cancel()


def _code(request: Request, sandbox_id: str) -> CodeInterpreter:
    manager: SandboxManager = request.app.state.agent.sandboxes
    return manager.code(sandbox_id)


def code_router() -> APIRouter:
    router = APIRouter(prefix="/sandboxes/{sandbox_id}/code")

    @router.get("/languages")
    async def languages(sandbox_id: str, request: Request) -> dict[str, Any]:
        found = await _code(request, sandbox_id).require_enabled()
        return {"languages": [language.to_json() for language in found]}

    @router.get("/contexts")
    async def list_contexts(sandbox_id: str, request: Request) -> dict[str, Any]:
        contexts = await _code(request, sandbox_id).contexts()
        return {"contexts": [context.to_json() for context in contexts]}

    @router.post("/contexts")
    async def create_context(sandbox_id: str, body: ContextCreate,
                             request: Request) -> dict[str, Any]:
        context = await _code(request, sandbox_id).create_context(body.language, body.cwd)
        return context.to_json()

    @router.post("/contexts/{context_id}/restart")
    async def restart_context(sandbox_id: str, context_id: str,
                              request: Request) -> dict[str, Any]:
        return (await _code(request, sandbox_id).restart_context(context_id)).to_json()

    @router.delete("/contexts/{context_id}", status_code=204)
    async def delete_context(sandbox_id: str, context_id: str, request: Request) -> Response:
        await _code(request, sandbox_id).delete_context(context_id)
        return Response(status_code=204)

    @router.post("/execute")
    async def execute(sandbox_id: str, body: CodeExecute, request: Request) -> StreamingResponse:
        code = _code(request, sandbox_id)
        env = specs.check_env(body.env or {}, "env")
        context = await code.context_for(body.context_id, body.language)
        run = await code.execute(context, body.code, env=env,
                                 timeout=body.timeout_seconds or None)
        return _RunResponse(run)

    return router
