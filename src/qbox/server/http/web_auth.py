"""Dashboard login: a password gives an HttpOnly session cookie; logout ends it.

These routes, the dashboard's pages and the shell WebSocket (from our own
origin only) are the only ones that read cookies. Every state-changing
request authenticated by the cookie must come from our own origin and carry
the session's CSRF token.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from qbox.core import json_input
from qbox.core.errors import AuthenticationError, PermissionDeniedError, ValidationError
from qbox.core.json_input import printable
from qbox.server.http.body import read_body
from qbox.server.http.access import rate_limited, same_origin
from qbox.server.http.auditing import Audited, describe
from qbox.server.http.deps import client_ip, services_of
from qbox.server.http.openapi import LoginForm, answers, request_body
from qbox.server.http import response_models as rm
from qbox.server.http.users import user_wire
from qbox.server.services.web_sessions import CSRF_COOKIE, SESSION_COOKIE, SessionPrincipal

router = APIRouter(prefix="/auth")

_MAX_FORM_FIELDS = 32
LOGIN = Audited("auth.login")
LOGOUT = Audited("auth.logout", target_is_caller=True)


async def _fields(request: Request) -> dict[str, str]:
    """JSON object or HTML form, whichever the body is; read and parsed by the input edge's rules.

    Unauthenticated, so bounded like every body (``QBOX_MAX_JSON_BODY_BYTES``, chunked or not).
    """
    raw = await read_body(request, services_of(request).ctx.settings.max_json_body_bytes)
    if request.headers.get("content-type", "").startswith("application/json"):
        data = json_input.loads(raw or b"{}")
        if not isinstance(data, dict):
            raise ValidationError.for_fields({"body": "must be a JSON object"})
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}
    try:
        pairs = parse_qsl(raw.decode("utf-8"), errors="strict", max_num_fields=_MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        raise ValidationError.for_fields({"body": "not valid UTF-8"}) from None
    except ValueError:
        raise ValidationError.for_fields({"body": f"more than {_MAX_FORM_FIELDS} form fields"}) from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise ValidationError.for_fields({printable(key): "must not contain NUL bytes"})
        fields.setdefault(key, value)
    return fields


async def session_principal(request: Request) -> SessionPrincipal:
    """Dependency: who the cookie's session is."""
    found = await services_of(request).web_sessions.resolve(request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise AuthenticationError("not logged in")
    request.state.principal = found.principal
    return found


async def same_site_session(request: Request,
                            found: SessionPrincipal = Depends(session_principal)) -> SessionPrincipal:
    """Dependency of a state-changing request: the session, sent from our own origin with its CSRF token."""
    presented = request.headers.get("x-csrf-token") or (await _fields(request)).get("csrf_token")
    if not same_origin(request) or not found.csrf_ok(presented):
        raise PermissionDeniedError("cross-site request refused: missing or wrong CSRF token",
                                    details={"reason": "csrf"})
    return found


@router.post("/login", responses=answers(200, rm.LoginAnswer, 401, 429), openapi_extra=request_body(
    LoginForm, media_types=("application/json", "application/x-www-form-urlencoded")),
    dependencies=[Depends(LOGIN.declare)])
async def login(request: Request) -> JSONResponse:
    services = services_of(request)
    fields = await _fields(request)
    email, password = fields.get("email", ""), fields.get("password", "")
    describe(request, f"email={email[:320]}")
    if not email or not password:
        raise ValidationError.for_fields({k: "required" for k in ("email", "password") if not fields.get(k)})
    user = await services.users.authenticate(email, password)
    if user is None:
        wait = services.limits.auth_failures.check(client_ip(request))
        if wait:
            raise rate_limited(wait, "failed logins from this address")
        raise AuthenticationError("wrong email or password")
    cookie, csrf = await services.web_sessions.open(user)
    response = JSONResponse({"user": user_wire(user), "csrfToken": csrf})
    set_session_cookies(request, response, cookie, csrf)
    return response


def set_session_cookies(request: Request, response: Response, cookie: str, csrf: str) -> None:
    """The dashboard session's cookies (the API's login and the login page set the same)."""
    secure = services_of(request).ctx.settings.secure_cookies or request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="lax", secure=secure, path="/")
    # Readable by our own pages' scripts (double submit); useless to other sites.
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="lax", secure=secure, path="/")


@router.get("/session", responses=answers(200, rm.SessionInfo))
async def current_session(found: SessionPrincipal = Depends(session_principal)) -> dict[str, Any]:
    p = found.principal
    return {"userId": p.user_id, "email": p.email, "role": p.role, "csrfToken": found.csrf_token}


@router.post("/logout", status_code=204, dependencies=[Depends(same_site_session), Depends(LOGOUT.declare)])
async def logout(request: Request) -> Response:
    await services_of(request).web_sessions.close(request.cookies.get(SESSION_COOKIE, ""))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response



