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

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qbox.agent import spec as specs
from qbox.agent.command_stream import NDJSON
from qbox.agent.interpreter import contexts, languages
from qbox.agent.interpreter.manager import CodeInterpreter, CodeRun
from qbox.agent.sandboxes import SandboxManager
from qbox.protocol.code import (
    CODE_EVENT,
    CodeExecute,
    Context,
    ContextCreate,
    Contexts,
    Language,
    Languages,
)
from qbox.protocol.wire import ndjson_line


def _language(found: languages.Language) -> Language:
    return Language(language=found.language, aliases=list(found.aliases),
                    kernel_name=found.kernel_name, is_default=found.is_default)


def _context(context: contexts.Context) -> Context:
    return Context(id=context.id, language=context.language, cwd=context.cwd,
                   is_default=context.is_default, kernel_name=context.kernel_name,
                   created_at=context.created_at, last_used_at=context.last_used_at,
                   state=context.state.value)


async def _lines(run: CodeRun) -> AsyncIterator[bytes]:
    # The events are the interpreter's: each is checked against the protocol on its way out.
    async for event in run:
        yield ndjson_line(CODE_EVENT.validate_python(event))


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
    async def list_languages(sandbox_id: str, request: Request) -> Languages:
        found = await _code(request, sandbox_id).require_enabled()
        return Languages(languages=[_language(language) for language in found])

    @router.get("/contexts")
    async def list_contexts(sandbox_id: str, request: Request) -> Contexts:
        found = await _code(request, sandbox_id).contexts()
        return Contexts(contexts=[_context(context) for context in found])

    @router.post("/contexts")
    async def create_context(sandbox_id: str, body: ContextCreate,
                             request: Request) -> Context:
        return _context(await _code(request, sandbox_id).create_context(body.language, body.cwd))

    @router.post("/contexts/{context_id}/restart")
    async def restart_context(sandbox_id: str, context_id: str, request: Request) -> Context:
        return _context(await _code(request, sandbox_id).restart_context(context_id))

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
