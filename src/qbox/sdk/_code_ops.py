"""Code-interpreter operations, written once for sync and async (see ``_steps``).

``POST …/code-execute`` answers one JSON object (unary) or, with
``"stream": true`` and ``Accept: text/event-stream``, a stream of events
(WIRE_PROTOCOL.md §4.5, §5.1) that ends when the server closes it after
``complete``. ``run_code`` without callbacks is unary; with callbacks, and
``run_code_stream``, it streams.

Retries: the unary request is retried like any POST (only on errors the
server calls transient: the code never ran). A stream is retried only while
opening it — before its first event, so no output is ever repeated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from qbox.core.errors import (
    ConnectionFailedError,
    ContextNotFoundError,
    ExecutionRaisedError,
    InvalidArgumentError,
    QboxError,
)
from qbox.sdk._api import Api, decode_response, retry_delay, should_retry
from qbox.sdk._code_models import (
    CodeContext,
    CodeEvent,
    CodeLanguage,
    Execution,
    ExecutionBuilder,
    ExecutionDone,
    ExecutionError,
    Result,
    StreamOutput,
    event_from_wire,
    events_from_unary,
)
from qbox.sdk._models import as_list, as_object, bad_response
from qbox.sdk._sandbox_ops import sandbox_path
from qbox.sdk._sse import SseParser
from qbox.sdk._steps import Close, Deliver, Op, Read, Sleep

EVENT_STREAM = "text/event-stream"
# The server stops the code at ``timeout``; give its answer this long to arrive.
ANSWER_MARGIN_SECONDS = 15

ContextRef = str | CodeContext


@dataclass(frozen=True)
class ExecuteRequest:
    """A validated code-execute request."""

    code: str
    language: str | None = None
    context_id: str | None = None
    env: Mapping[str, str] | None = None
    timeout: float | None = None

    @classmethod
    def of(
        cls,
        code: str,
        language: str | None,
        context: ContextRef | None,
        env: Mapping[str, str] | None,
        timeout: float | None,
    ) -> ExecuteRequest:
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, not {type(code).__name__}")
        if language and context:
            raise InvalidArgumentError(
                "pass language or context, not both: a context has its own language",
                details={"reason": "invalid_argument"},
            )
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive (or None for the server's limit), got {timeout!r}")
        return cls(code, language or None, context_id(context) if context else None, env, timeout)

    def body(self, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code}
        if self.context_id:
            body["contextId"] = self.context_id
        if self.language:
            body["language"] = self.language
        if self.env:
            body["env"] = {str(k): str(v) for k, v in self.env.items()}
        if self.timeout is not None:
            body["timeoutSeconds"] = max(1, math.ceil(self.timeout))
        if stream:
            body["stream"] = True
        return body

    def client_timeout(self, api: Api) -> float | None:
        """How long to wait for an answer (for a stream: for each chunk of it)."""
        if self.timeout is None:
            return None
        return max(api.request_timeout, self.timeout + ANSWER_MARGIN_SECONDS)


@dataclass
class Callbacks:
    on_stdout: Callable[[str], object] | None = None
    on_stderr: Callable[[str], object] | None = None
    on_result: Callable[[Result], object] | None = None
    on_error: Callable[[ExecutionError], object] | None = None

    @property
    def any(self) -> bool:
        return any((self.on_stdout, self.on_stderr, self.on_result, self.on_error))

    def deliver(self, event: CodeEvent) -> Op[None]:
        if isinstance(event, StreamOutput):
            callback = self.on_stdout if event.stream == "stdout" else self.on_stderr
            if callback is not None:
                yield from Deliver(callback, event.text)
        elif isinstance(event, Result):
            if self.on_result is not None:
                yield from Deliver(self.on_result, event)
        elif isinstance(event, ExecutionError) and self.on_error is not None:
            yield from Deliver(self.on_error, event)


@dataclass
class EventCursor:
    """An open code-execute stream and what has been read of it."""

    stream: Any = None
    parser: SseParser = field(default_factory=SseParser)
    unary: bool = False  # the server answered JSON to the stream request
    done: bool = False  # its ``complete`` event came
    finished: bool = False  # read to its end (or given up)


def context_id(context: ContextRef) -> str:
    return context.id if isinstance(context, CodeContext) else str(context)


def _execute_path(sandbox_id: str) -> str:
    return sandbox_path(sandbox_id, "/code-execute")


def _contexts_path(sandbox_id: str, context: ContextRef | None = None, suffix: str = "") -> str:
    tail = "" if context is None else f"/{context_id(context)}"
    return sandbox_path(sandbox_id, f"/code-contexts{tail}{suffix}")


def execute(api: Api, sandbox_id: str, request: ExecuteRequest) -> Op[Execution]:
    """One unary request: the whole execution at once."""
    built = api.build("POST", _execute_path(sandbox_id), json=request.body(stream=False))
    answer = decode_response((yield from api.exchange(replace(built, timeout=request.client_timeout(api)))))
    builder = ExecutionBuilder()
    for event in events_from_unary(answer):
        builder.add(event)
    return builder.build()


def open_events(api: Api, sandbox_id: str, request: ExecuteRequest) -> Op[EventCursor]:
    """Open the event stream, retrying transient refusals (nothing has been read yet)."""
    built = api.build("POST", _execute_path(sandbox_id), json=request.body(stream=True))
    built = replace(built, headers={**built.headers, "Accept": EVENT_STREAM}, timeout=request.client_timeout(api))
    attempt = 0
    while True:
        attempt += 1
        try:
            response = yield from api.open(built)
            break
        except QboxError as error:
            if attempt > api.max_retries or not should_retry(error, built.method):
                raise
            yield from Sleep(retry_delay(error, attempt))
    content_type = response.header("content-type") or ""
    return EventCursor(stream=response.stream, unary=EVENT_STREAM not in content_type and "json" in content_type)


def _read_unary(cursor: EventCursor) -> Op[list[CodeEvent]]:
    body = b""
    while (chunk := (yield from Read(cursor.stream))) is not None:
        body += chunk
    try:
        return events_from_unary(json.loads(body))
    except ValueError:
        raise bad_response(f"an execution that is not JSON: {body[:200]!r}") from None


def next_events(cursor: EventCursor) -> Op[list[CodeEvent]]:
    """The events in the stream's next chunk; at its end, what is left."""
    if cursor.finished:
        return []
    if cursor.unary:
        cursor.finished = True
        events = yield from _read_unary(cursor)
    else:
        chunk = yield from Read(cursor.stream)
        if chunk is None:
            cursor.finished = True
        payloads = cursor.parser.close() if chunk is None else cursor.parser.feed(chunk)
        events = [e for e in map(event_from_wire, payloads) if e is not None]
    if any(isinstance(e, ExecutionDone) for e in events):
        cursor.done = True
    if cursor.finished and not cursor.done:
        raise ConnectionFailedError("the code-execute stream ended before the execution completed")
    return events


def close_events(cursor: EventCursor) -> Op[None]:
    """Give the stream up (iteration stopped early); nothing when it was read to its end."""
    if not cursor.finished:
        cursor.finished = True
        yield from Close(cursor.stream)


def execute_streaming(api: Api, sandbox_id: str, request: ExecuteRequest, callbacks: Callbacks) -> Op[Execution]:
    """Stream the execution, handing each event to its callback as it arrives."""
    cursor = yield from open_events(api, sandbox_id, request)
    builder = ExecutionBuilder()
    try:
        while not cursor.finished:
            for event in (yield from next_events(cursor)):
                builder.add(event)
                yield from callbacks.deliver(event)
    finally:
        yield from close_events(cursor)
    return builder.build()


def raise_for_execution(execution: Execution) -> None:
    if execution.error is not None:
        raise ExecutionRaisedError(str(execution.error), execution=execution)
    if execution.timed_out:
        raise ExecutionRaisedError(f"the code ran out of time after {execution.execution_ms} ms", execution=execution)


def run(
    api: Api,
    sandbox_id: str,
    request: ExecuteRequest,
    callbacks: Callbacks,
    *,
    raise_on_error: bool,
) -> Op[Execution]:
    if callbacks.any:
        execution = yield from execute_streaming(api, sandbox_id, request, callbacks)
    else:
        execution = yield from execute(api, sandbox_id, request)
    if raise_on_error:
        raise_for_execution(execution)
    return execution


def create_context(api: Api, sandbox_id: str, language: str, cwd: str | None) -> Op[CodeContext]:
    body: dict[str, Any] = {"language": language}
    if cwd:
        body["cwd"] = cwd
    return CodeContext.from_wire((yield from api.post(_contexts_path(sandbox_id), json=body)))


def list_contexts(api: Api, sandbox_id: str) -> Op[list[CodeContext]]:
    data = as_object((yield from api.get(_contexts_path(sandbox_id))) or {}, "the context list")
    return [CodeContext.from_wire(row) for row in as_list(data.get("contexts"), "contexts")]


def get_context(api: Api, sandbox_id: str, context: ContextRef) -> Op[CodeContext]:
    wanted = context_id(context)
    for found in (yield from list_contexts(api, sandbox_id)):
        if found.id == wanted:
            return found
    raise ContextNotFoundError(f"no code context {wanted!r} in {sandbox_id}", details={"contextId": wanted})


def restart_context(api: Api, sandbox_id: str, context: ContextRef) -> Op[CodeContext]:
    return CodeContext.from_wire((yield from api.post(_contexts_path(sandbox_id, context, "/restart"))))


def remove_context(api: Api, sandbox_id: str, context: ContextRef) -> Op[None]:
    yield from api.delete(_contexts_path(sandbox_id, context))


def list_languages(api: Api, sandbox_id: str) -> Op[list[CodeLanguage]]:
    data = as_object((yield from api.get(sandbox_path(sandbox_id, "/code-languages"))) or {}, "the language list")
    return [CodeLanguage.from_wire(row) for row in as_list(data.get("languages"), "languages")]
