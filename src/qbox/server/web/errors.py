"""Errors on the dashboard's own URLs read as pages, never as the API's JSON.

The app's error handlers (``core.asgi``) answer the API's envelope; here they
are wrapped so that a request for a page — a path under the dashboard's
prefixes — gets the same status with a readable page, or, for an htmx swap,
a message the page shows in its alert area. No session sends a browser to
``/login`` (an htmx swap is told to go there). An unexpected error shows its
request id, never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from qbox.core.asgi import request_id_of
from qbox.core.errors import QboxError, ValidationError
from qbox.server.web.access import LoginRequired, viewer_of
from qbox.server.web.render import is_htmx, render

log = logging.getLogger(__name__)

# Every dashboard URL starts with one of these (the API lives under /v1 and /auth).
PAGE_PREFIXES = ("/login", "/logout", "/sandboxes", "/templates", "/hosts", "/keys", "/users", "/audit",
                 "/assets", "/preview-auth")
Handler = Callable[[Request, Exception], Awaitable[Response]]

_TITLES = {400: "That did not work", 401: "Please sign in", 403: "Not allowed", 404: "Not found",
           405: "Not allowed here", 409: "Not possible right now", 413: "Too large",
           422: "That did not work", 429: "Slow down", 503: "Unavailable for a moment"}


def is_page(request: Request) -> bool:
    path = request.url.path
    return path == "/" or any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES)


def _message(exc: Exception) -> tuple[int, str, dict[str, object]]:
    if isinstance(exc, QboxError):
        return exc.status, exc.message, dict(exc.details)
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, {404: "there is no page here",
                                 405: "this page does not take that method"}.get(
                                     exc.status_code, str(exc.detail)), {}
    if isinstance(exc, RequestValidationError):
        return 400, "the form was not filled in right", {}
    return 500, "", {}


def error_page(request: Request, exc: Exception) -> Response:
    status, message, details = _message(exc)
    if isinstance(exc, LoginRequired):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = "/login?next=" + quote(here, safe="/")
        if is_htmx(request):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    if status >= 500 and not details.get("transient"):
        rid = request_id_of(request)
        log.error("unhandled error on %s %s (%s)", request.method, request.url.path, rid,
                  exc_info=exc if not isinstance(exc, QboxError) else None)
        message = (f"Something went wrong on our side (request {rid}). "
                   "Try again; if it keeps happening, tell your operator.")
    fields = details.get("fieldErrors") if isinstance(exc, ValidationError) else None
    context: dict[str, Any] = {"code": status, "title": _TITLES.get(status, "Error"), "message": message,
               "fields": fields if isinstance(fields, dict) else {}}
    if is_htmx(request):
        # Shown in the page's alert area, whatever the request meant to swap.
        return render(request, "_alert.html", None, status=status, **context,
                      headers={"HX-Retarget": "#alerts", "HX-Reswap": "innerHTML"})
    return render(request, "error.html", getattr(request.state, "viewer", None), status=status, **context)


def install(app: FastAPI) -> None:
    """Wrap the app's error handlers: a page's error is a page."""
    for kind in (QboxError, RequestValidationError, StarletteHTTPException, Exception):
        api = cast(Handler, app.exception_handlers[kind])

        async def handler(request: Request, exc: Exception, api: Handler = api) -> Response:
            if not is_page(request) or request.url.path.startswith("/assets/"):
                return await api(request, exc)
            if isinstance(exc, StarletteHTTPException) and not hasattr(request.state, "viewer"):
                # No route here: who asks decides between a 404 page and the login form.
                try:
                    await viewer_of(request)
                except LoginRequired as missing:
                    exc = missing
            return error_page(request, exc)

        app.add_exception_handler(kind, handler)
