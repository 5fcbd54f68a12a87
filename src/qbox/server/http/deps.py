"""Request plumbing shared by the routers: who is calling, rate limits, audit notes, JSON bodies."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import urlsplit

import pydantic
from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from qbox.core import json_input
from qbox.core.asgi import field_errors
from qbox.core.ids import is_path_id
from qbox.core.errors import (
    AuthenticationError,
    ContextNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProcessNotFoundError,
    RateLimitedError,
    SandboxNotFoundError,
    TemplateNotFoundError,
    ValidationError,
)
from qbox.server.services.audit_notes import AuditNote, make_current
from qbox.server.http.body import read_body
from qbox.server.principal import Principal
from qbox.server.services.keys import principal_for_secret
from qbox.server.services.registry import Services
from qbox.server.services.web_sessions import SESSION_COOKIE

M = TypeVar("M", bound=pydantic.BaseModel)
# Path parameters that name the request's target, in order of preference.
_TARGET_PARAMS = ("sandbox_id", "key_id", "user_id", "template_id", "host_id")
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}
# What a malformed path id is not found as (other parameters: not_found).
_NOT_FOUND: dict[str, type[NotFoundError]] = {
    "sandbox_id": SandboxNotFoundError,
    "template_id": TemplateNotFoundError,
    "context_id": ContextNotFoundError,
    "pid": ProcessNotFoundError,
}


def services_of(request: HTTPConnection) -> Services:
    services: Services = request.app.state.services
    return services


def client_ip(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


def note_of(request: HTTPConnection) -> AuditNote | None:
    note = getattr(request.state, "audit", None)
    return note if isinstance(note, AuditNote) else None


def attach_note(conn: HTTPConnection, note: AuditNote, *, current: bool = True) -> AuditNote:
    """The request's audit note; if ``current``, a change the request commits carries its entry.

    Its outcome in that case is the status the route declares for success.
    """
    conn.state.audit = note
    note.source_ip = conn.client.host if conn.client else None
    note.success_status = getattr(conn.scope.get("route"), "status_code", None) or 200
    if current:
        make_current(note)
    return note


def rate_limited(retry_after: float, what: str) -> RateLimitedError:
    seconds = max(1, int(retry_after + 0.999))
    return RateLimitedError(f"rate limit exceeded for {what}; retry in {seconds} s",
                            details={"retryAfterSeconds": seconds}, retry_after=seconds)


def same_origin(conn: HTTPConnection, *, strict: bool = False) -> bool:
    """Whether the Origin (or Referer) is our own; a WebSocket's ws/wss is our http/https.

    Without either header a request counts as same-origin (non-browser clients,
    which still need the CSRF token), unless ``strict``.
    """
    origin = conn.headers.get("origin") or (None if strict else conn.headers.get("referer"))
    if not origin:
        return not strict
    parts = urlsplit(origin)
    scheme = _HTTP_SCHEMES.get(conn.url.scheme, conn.url.scheme)
    return f"{parts.scheme}://{parts.netloc}" == f"{scheme}://{conn.url.netloc}"


async def credentials_principal(conn: HTTPConnection, *, cookie: bool = False) -> Principal | None:
    """Whom the bearer key (or, if ``cookie``, the dashboard session) names; None if nobody.

    The cookie counts only from our own origin, which the caller checks first.
    """
    services = services_of(conn)
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        async with services.ctx.sessions() as session:
            return await principal_for_secret(session, token)
    if cookie and not token and (found := await services.web_sessions.resolve(conn.cookies.get(SESSION_COOKIE))):
        return found.principal
    return None


async def authenticate(conn: HTTPConnection, scope: str | None, *, action: str | None = None,
                       cookie: bool = False) -> Principal:
    """The authenticated principal, which must hold ``scope`` (None: any valid key).

    ``action`` names the audit entry of a state-changing call; every
    authentication failure is audited too, as ``auth.failed`` elsewhere.
    ``cookie`` also accepts the dashboard session, from our own origin only.
    """
    services = services_of(conn)
    method = str(conn.scope.get("method", "GET"))
    note = AuditNote(action or "",
                     target_id=next((str(conn.path_params[p]) for p in _TARGET_PARAMS
                                     if p in conn.path_params and is_path_id(p, str(conn.path_params[p]))),
                                    None))
    if action:
        # Not current yet: authenticating may commit (a key's last use), which is no change of the caller's.
        attach_note(conn, note, current=False)
    has_token = bool(conn.headers.get("authorization", "").partition(" ")[2].strip())
    cross_site = cookie and not has_token and SESSION_COOKIE in conn.cookies and not same_origin(conn, strict=True)
    principal = None if cross_site else await credentials_principal(conn, cookie=cookie)
    if principal is None:
        note.action = action or "auth.failed"
        attach_note(conn, note, current=False)
        note.detail = f"{method} {conn.url.path}"
        wait = services.limits.auth_failures.check(client_ip(conn))
        if wait:
            raise rate_limited(wait, "failed authentications from this address")
        if cross_site:
            raise PermissionDeniedError("the session cookie is accepted only from this server's own origin",
                                        details={"reason": "origin"})
        if not has_token:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer qbox_…'")
        raise AuthenticationError("invalid, revoked or expired API key")
    note.principal = principal
    conn.state.principal = principal
    wait = services.limits.requests.check(principal.api_key_id or principal.user_id)
    if not wait and action == "sandbox.create":
        wait = services.limits.spawns.check(principal.api_key_id or principal.user_id)
    if wait:
        note.action = action or "rate_limited"
        note.detail = note.detail or f"{method} {conn.url.path}"
        attach_note(conn, note, current=False)
        raise rate_limited(wait, "sandbox spawns" if action == "sandbox.create" else "requests")
    if scope is not None and not principal.may(scope):
        raise PermissionDeniedError(
            f"api key missing required scope: {scope}",
            details={"requiredScope": scope, "grantedScopes": sorted(principal.effective)},
        )
    check_path_ids(conn)
    if action and conn.scope["type"] == "http":
        # A shell changes nothing in the database; its entry is written at the upgrade.
        make_current(note)
    return principal


def check_path_ids(conn: HTTPConnection) -> None:
    """404 for a path id not of its kind's format: it names nothing, and never reaches a lookup or a host."""
    for param, value in conn.path_params.items():
        if not is_path_id(param, str(value)):
            error = _NOT_FOUND.get(param, NotFoundError)
            raise error(f"no such {param.removesuffix('_id').replace('_', ' ')}: the id is not of that kind's format",
                        details={"param": param})


def require(scope: str | None, *, action: str | None = None) -> Any:
    """Dependency: ``authenticate`` for an HTTP route (bearer keys only)."""

    async def dependency(request: Request) -> Principal:
        return await authenticate(request, scope, action=action)

    return Depends(dependency)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDeniedError("this needs an admin", details={"requiredRole": "admin"})


async def json_body(request: Request, model: type[M], *, allow_empty: bool = False,
                    max_bytes: int | None = None) -> M:
    """Parse the body as strict JSON whatever its Content-Type (curl's ``-d`` sends a form type).

    The body is read through the input edge (``body.read_body``: at most
    ``max_bytes``, by default ``QBOX_MAX_JSON_BODY_BYTES``, even when chunked) and
    parsed by ``json_input``; types are strict (``true`` is not a number, ``"80"``
    not an integer). Validation messages never quote the values given (they may be secrets).
    """
    limit = max_bytes if max_bytes is not None else services_of(request).ctx.settings.max_json_body_bytes
    raw = await read_body(request, limit)
    if not raw.strip():
        if not allow_empty:
            raise ValidationError.for_fields({"body": "a JSON object is required"})
        raw = b"{}"
    if not isinstance(json_input.loads(raw), dict):
        raise ValidationError.for_fields({"body": "must be a JSON object"})
    try:
        return model.model_validate_json(raw, strict=True)
    except pydantic.ValidationError as exc:
        fields, _ = field_errors(list(exc.errors()))
        raise ValidationError.for_fields(fields, "invalid request: " + "; ".join(
            f"{k}: {v}" for k, v in fields.items())) from exc
