"""/v1/sandboxes/{id}/code-*: the code interpreter (WIRE_PROTOCOL §4.5, SSE §5.1).

``code-execute`` answers one JSON object, or, with ``"stream": true``, an
SSE stream of CodeEvents that always ends with ``complete`` and is closed
right after it (the published client reads to EOF with no timeout). Quiet
executions get a keep-alive comment every few seconds.

A client that goes away (SSE or unary, before or after the first event)
closes the agent call, and the agent then interrupts the cell: a
disconnected ``while True: pass`` does not keep its kernel busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field, field_validator

from qbox.core.disconnects import gone, unless_disconnected
from qbox.protocol.code import (
    CodeEventBody,
    CodeExecute,
    CompleteCodeEvent,
    ContextCreate,
    ErrorCodeEvent,
)
from qbox.server.http import views
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.auditing import describe
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import media, request_body
from qbox.server.http.relay import RelayResponse
from qbox.server.http.schemas import ENV_KEY_RE, _Body, _no_nul
from qbox.server.principal import Principal
from qbox.server.services.code import Execution, events_of

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}")
KEEPALIVE_SECONDS = 10.0
DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 24 * 3600
_LANGUAGE = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+.-]+$")
_CONTEXT_ID = Field(default=None, min_length=1, max_length=80, alias="contextId")


class ExecuteBody(_Body):
    code: str = Field(max_length=1024 * 1024)
    context_id: str | None = _CONTEXT_ID
    language: str | None = _LANGUAGE
    env: dict[str, str] = Field(default_factory=dict)
    # The published client sends int(timeout): 0 means "none given" here.
    timeout_seconds: int | None = Field(default=None, alias="timeoutSeconds", ge=0,
                                        le=MAX_TIMEOUT_SECONDS)
    stream: bool = False

    @field_validator("env")
    @classmethod
    def _env_ok(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not ENV_KEY_RE.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            _no_nul(value, f"value of {key}")
        return env

    def to_agent(self) -> CodeExecute:
        return CodeExecute(code=self.code, context_id=self.context_id or None,
                           language=self.language.lower() if self.language else None,
                           env=self.env,
                           timeout_seconds=self.timeout_seconds or DEFAULT_TIMEOUT_SECONDS)


class ContextBody(_Body):
    language: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+.-]+$")
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)

    _cwd_ok = field_validator("cwd")(lambda v: v if v is None else _no_nul(v, "cwd"))

    def to_agent(self) -> ContextCreate:
        return ContextCreate(language=self.language, cwd=self.cwd)


def _sse(event: CodeEventBody) -> bytes:
    data = json.dumps(event.wire(), separators=(",", ":"))
    return f"event: {event.kind}\ndata: {data}\n\n".encode()


async def _sse_stream(events: AsyncIterator[CodeEventBody]) -> AsyncIterator[bytes]:
    """The events as SSE, keep-alives while quiet, and always a final ``complete``."""
    queue: asyncio.Queue[CodeEventBody | None] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        finally:
            await queue.put(None)

    task = asyncio.ensure_future(pump())
    completed = False
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event is None:
                break
            yield _sse(event)
            if isinstance(event, CompleteCodeEvent):
                completed = True
                break
        if not completed:  # the interpreter went away mid-execution: say so, then end
            yield _sse(ErrorCodeEvent(error=views.INTERRUPTED_ERROR))
            yield _sse(CompleteCodeEvent(execution_ms=0, timed_out=False))
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@router.post("/code-execute", response_model=None, openapi_extra=request_body(ExecuteBody),
             responses=media(200, "application/json", "text/event-stream"))
async def execute(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="code.execute"),
) -> dict[str, Any] | Response:
    body = await json_body(request, ExecuteBody)
    describe(request, f"{body.context_id or body.language or 'default'} ({len(body.code.encode())} bytes of code)")
    relayed = await services_of(request).code.execute(principal, sandbox_id, body.to_agent())
    if body.stream:
        return RelayResponse(relayed, "text/event-stream; charset=utf-8",
                             body=_sse_stream(events_of(relayed.chunks)))
    try:
        execution = await unless_disconnected(request, aggregate(events_of(relayed.chunks)))
    finally:
        await relayed.close()
    return gone() if execution is None else views.execution(execution)


async def aggregate(events: AsyncGenerator[CodeEventBody, None]) -> Execution:
    """An execution's events gathered into its result (the API's and the Code tab's answer)."""
    execution = Execution()
    async with contextlib.aclosing(events):
        async for event in events:
            execution.add(event)
            if execution.complete:
                break
    return execution


@router.get("/code-languages")
async def languages(sandbox_id: str, request: Request,
                    principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS)) -> dict[str, Any]:
    return views.languages(await services_of(request).code.languages(principal, sandbox_id))


@router.get("/code-contexts")
async def contexts(sandbox_id: str, request: Request,
                   principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS)) -> dict[str, Any]:
    return views.contexts(await services_of(request).code.contexts(principal, sandbox_id))


@router.post("/code-contexts", status_code=201, openapi_extra=request_body(ContextBody))
async def create_context(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="code.context.create"),
) -> dict[str, Any]:
    body = await json_body(request, ContextBody)
    describe(request, body.language)
    context = await services_of(request).code.create_context(principal, sandbox_id,
                                                             body.to_agent())
    describe(request, f"{context.id} {body.language}")
    return views.context(context)


@router.post("/code-contexts/{context_id}/restart")
async def restart_context(
    sandbox_id: str, context_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="code.context.restart"),
) -> dict[str, Any]:
    describe(request, context_id)
    return views.context(
        await services_of(request).code.restart_context(principal, sandbox_id, context_id))


@router.delete("/code-contexts/{context_id}", status_code=204)
async def delete_context(
    sandbox_id: str, context_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="code.context.delete"),
) -> Response:
    describe(request, context_id)
    await services_of(request).code.delete_context(principal, sandbox_id, context_id)
    return Response(status_code=204)
