"""The one place errors become HTTP responses, for the control plane and the agent.

Every error — ours, Starlette's 404/405, malformed JSON, request validation,
anything unexpected — leaves as ``{"error": {"code", "message", "details"}}``
with an ``X-Request-Id``. Unexpected exceptions are logged with their
traceback and answered as ``internal`` without one.

Only the server and agent import this module (it needs Starlette); the SDK
never does.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qbox.core.error_codes import ERROR_CLASSES_BY_CODE
from qbox.core.errors import (
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    QboxError,
    ValidationError,
)
from qbox.core.ids import is_path_id

log = logging.getLogger("qbox.http")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


class RequestIdMiddleware:
    """Gives every request an id (``scope["state"]["request_id"]``) and every response the header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - last resort: the handlers below failed
            log.exception("unhandled error outside the exception handlers (%s)", request_id)
            if scope["type"] == "http":
                response = error_response(InternalError(f"internal server error (request {request_id})"))
                await response(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else new_request_id()


def error_response(error: QboxError) -> JSONResponse:
    """The error envelope; ``RequestIdMiddleware`` adds the request id header."""
    headers: dict[str, str] = {}
    retry_after = error.retry_after
    if retry_after is None and isinstance(error.details.get("retryAfterSeconds"), int | float):
        retry_after = float(error.details["retryAfterSeconds"])
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(round(retry_after))))
    if isinstance(error, PayloadTooLargeError):
        # The rest of the body is not wanted: the connection ends with this answer, which
        # stops a client still sending (uvicorn would otherwise read and discard it all).
        headers["Connection"] = "close"
    return JSONResponse(error.to_wire(), status_code=error.status, headers=headers)


def field_errors(errors: list[Any]) -> tuple[dict[str, str], bool]:
    """Map pydantic's error list to ``{"field.path": "message"}``; say whether the JSON was malformed."""
    fields: dict[str, str] = {}
    malformed = False
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            malformed = True
            fields["body"] = "malformed JSON: " + str(err.get("ctx", {}).get("error", err.get("msg")))
            continue
        key = ".".join(loc) or "body"
        fields.setdefault(key, str(err.get("msg", "invalid value")))
    return fields, malformed


def _from_http_exception(exc: StarletteHTTPException) -> QboxError:
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404:
        return NotFoundError(detail if detail and detail != "Not Found" else "no such route")
    if exc.status_code == 405:
        return MethodNotAllowedError("method not allowed on this route")
    for cls in ERROR_CLASSES_BY_CODE.values():
        if cls.status == exc.status_code and cls.__base__ is QboxError:
            return cls(detail or cls.code)
    return QboxError(detail or "HTTP error", status=exc.status_code, code="http_error")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's).

    Routes whose path ids have their kind's format come first: ``/v1/templates/from-git`` is
    no ``/v1/templates/{template_id}`` (whose edge check would answer 404), so it allows POST
    only. When no route's ids fit, every route the path matches is named.
    """
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Any = contexts(request.app.routes) if contexts else request.app.routes
    fitting: set[str] = set()
    matching: set[str] = set()
    for route in routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is None or not route_methods or not (match := regex.match(request.url.path)):
            continue
        matching |= set(route_methods)
        if all(is_path_id(param, value) for param, value in match.groupdict().items()):
            fitting |= set(route_methods)
    return sorted(fitting or matching)


def install_error_handlers(app: FastAPI) -> None:
    async def on_qbox_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, QboxError)
        if exc.status >= 500 and not exc.details.get("transient"):
            log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields, malformed = field_errors(list(exc.errors()))
        message = "request body is not valid JSON" if malformed else "invalid request"
        return error_response(ValidationError.for_fields(fields, message))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        response = error_response(_from_http_exception(exc))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        rid = request_id_of(request)
        log.error("unhandled error on %s %s (%s)", request.method, request.url.path, rid,
                  exc_info=exc)
        return error_response(InternalError(f"internal server error (request {rid})"))

    app.add_exception_handler(QboxError, on_qbox_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(RequestIdMiddleware)
