"""The input edge: every request's URL, query and body pass here before any route sees them.

``InputEdgeMiddleware`` refuses over-long URLs and query strings that are not
strict text (invalid UTF-8 escapes, NUL anywhere, control characters in a
name) with the error envelope, and counts each body's bytes as they arrive:
past the request's limit it stops reading and raises ``payload_too_large``,
so memory stays bounded whether the body is chunked or declared, and whoever
reads it (a JSON route, the login form, a framework parser). The limit is the
JSON limit unless a route takes over with its own (``lift_body_limit``, for
streamed uploads).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from qbox.core.asgi import error_response
from qbox.core.errors import PayloadTooLargeError, ValidationError
from qbox.core.json_input import CONTROL_CHARS, printable

_LIMIT_KEY = "body_limit"


class InputEdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_url_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_url_bytes = max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            self._check_url(scope)
        except ValidationError as exc:
            await _refuse(scope, receive, send, exc)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[_LIMIT_KEY] = self.max_body_bytes
        await self.app(scope, _counting(scope, receive), send)

    def _check_url(self, scope: Scope) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        length = len(raw_path) + len(scope.get("query_string", b""))
        if length > self.max_url_bytes:
            raise ValidationError.for_fields({"url": f"longer than {self.max_url_bytes} bytes"},
                                             f"request URL is longer than {self.max_url_bytes} bytes")
        problems = query_problems(scope.get("query_string", b""))
        if problems:
            raise ValidationError.for_fields(problems)


def query_problems(query: bytes) -> dict[str, str]:
    """``{"name": problem}`` for query parameters that are not strict text."""
    fields: dict[str, str] = {}
    for pair in query.split(b"&"):
        raw_name, _, raw_value = pair.partition(b"=")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            fields["query"] = "a parameter name is not valid UTF-8"
            continue
        if CONTROL_CHARS.search(name):
            fields[printable(name)] = "parameter names must not contain control characters"
            continue
        try:
            value = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            fields[name] = "not valid UTF-8"
            continue
        if "\x00" in value:
            fields[name] = "must not contain NUL bytes"
    return fields


async def _refuse(scope: Scope, receive: Receive, send: Send, error: ValidationError) -> None:
    response = error_response(error)
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008, error.message[:120])


def _counting(scope: Scope, receive: Receive) -> Receive:
    """``receive`` that stops at the request's limit, declared or counted."""
    received = 0
    declared = _declared_length(scope)

    async def counted() -> Message:
        nonlocal received
        limit = scope["state"].get(_LIMIT_KEY)
        if limit is not None and (declared or 0) > limit:
            raise _too_large(limit)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if limit is not None and received > limit:
                raise _too_large(limit)
        return message

    return counted


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body over {limit} bytes", details={"maxBytes": limit})


def set_body_limit(conn: HTTPConnection, max_bytes: int) -> None:
    """This request's body may be at most ``max_bytes`` (a route with its own JSON limit)."""
    state: dict[str, Any] = conn.scope.setdefault("state", {})
    state[_LIMIT_KEY] = max_bytes


def lift_body_limit(conn: HTTPConnection) -> None:
    """The route streams this body and enforces its own limit (file uploads)."""
    state: dict[str, Any] = conn.scope.setdefault("state", {})
    state[_LIMIT_KEY] = None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, read through the edge's counter: never more than ``max_bytes`` is held."""
    set_body_limit(request, max_bytes)
    return await request.body()
