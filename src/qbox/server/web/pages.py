"""The dashboard's front door: ``/`` and signing in and out.

``POST /login`` takes the form fields ``email`` and ``password`` (as the
API's ``/auth/login`` does) and sets the same HttpOnly session cookie; a
wrong password re-shows the form with a message and counts against the
address's failed-authentication limit.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.core.errors import PermissionDeniedError
from qbox.server.http.access import rate_limited, same_origin
from qbox.server.http.auditing import describe
from qbox.server.http.web_auth import LOGIN, LOGOUT, set_session_cookies
from qbox.server.http.deps import client_ip, services_of
from qbox.server.services.web_sessions import CSRF_COOKIE, SESSION_COOKIE
from qbox.server.web.access import Change, Viewer, form_fields
from qbox.server.web.render import render

router = APIRouter(include_in_schema=False)
HOME = "/sandboxes"


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never ``//elsewhere``)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return HOME


@router.get("/")
async def root(request: Request) -> Response:
    found = await services_of(request).web_sessions.resolve(request.cookies.get(SESSION_COOKIE))
    return RedirectResponse(HOME if found else "/login", status_code=303)


@router.get("/login")
async def login_form(request: Request) -> Response:
    found = await services_of(request).web_sessions.resolve(request.cookies.get(SESSION_COOKIE))
    target = _safe_next(request.query_params.get("next"))
    if found is not None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", None, next=target, email="", error=None)


@router.post("/login", dependencies=[Depends(LOGIN.declare)])
async def login(request: Request) -> Response:
    services = services_of(request)
    fields = await form_fields(request)
    email, password = fields.get("email", "").strip(), fields.get("password", "")
    target = _safe_next(fields.get("next"))
    describe(request, f"email={email[:320]}")
    if not same_origin(request):
        # Another site's form signing the browser in to an account of the attacker's choosing.
        raise PermissionDeniedError("sign in from this server's own login page", details={"reason": "origin"})
    user = await services.users.authenticate(email, password) if email and password else None
    if user is None:
        wait = services.limits.auth_failures.check(client_ip(request))
        if wait:
            raise rate_limited(wait, "failed sign-ins from this address")
        return render(request, "login.html", None, status=401, next=target, email=email[:320],
                      error="Wrong email or password." if email and password
                      else "Enter your email and password.")
    cookie, csrf = await services.web_sessions.open(user)
    response = RedirectResponse(target, status_code=303)
    set_session_cookies(request, response, cookie, csrf)
    return response


@router.post("/logout")
async def logout(request: Request, viewer: Viewer = Depends(Change(None, audit=LOGOUT))) -> Response:
    await services_of(request).web_sessions.close(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response
