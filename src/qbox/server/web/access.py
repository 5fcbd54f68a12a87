"""Who looks at a page, and whether a change sent from a page may happen.

A page is read with the dashboard's session cookie; with none (or an ended
one) the browser is sent to ``/login``. A change — every non-GET page route —
must come from our own origin (its ``Origin`` header, which browsers send on
every non-GET request; none is refused) and carry the session's CSRF token (the ``X-CSRF-Token`` header
htmx adds, or a form's ``csrf_token`` field). Then it passes the same checks
as the API's route for the same change: the scope, the requests bucket, the
path ids, and the audit entry under the API's action name, so the audit log
reads alike whichever way a change came.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.requests import HTTPConnection

from qbox.core.errors import AuthenticationError, PermissionDeniedError
from qbox.server.http.access import Bucket, check_path_ids, draw, require_admin, require_scope, same_origin
from qbox.server.http.auditing import Audited, allowed_to_change, note_of
from qbox.server.http.body import read_body
from qbox.server.http.deps import services_of
from qbox.server.services.web_sessions import SESSION_COOKIE, SessionPrincipal

_MAX_FORM_FIELDS = 256


class LoginRequired(AuthenticationError):
    """No session: a page sends the browser to the login form (``errors.py``)."""


@dataclass(frozen=True)
class Viewer(SessionPrincipal):
    """The signed-in user looking at a page, and the CSRF token its changes must echo."""

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


async def viewer_of(conn: HTTPConnection) -> Viewer:
    """The session's user, or ``LoginRequired``."""
    found = await services_of(conn).web_sessions.resolve(conn.cookies.get(SESSION_COOKIE))
    if found is None:
        raise LoginRequired("sign in to see this page")
    viewer = Viewer(found.principal, found.csrf_token)
    conn.state.principal = found.principal
    conn.state.viewer = viewer  # the error page shows the navigation too
    return viewer


@dataclass(frozen=True)
class Page:
    """A page route's reader: ``Depends(Page("sandboxes:read"))``; ``admin`` pages refuse members."""

    scope: str | None = None
    admin: bool = False

    async def __call__(self, request: Request) -> Viewer:
        viewer = await viewer_of(request)
        draw(request, viewer.principal, (Bucket.REQUESTS,))
        require_scope(viewer.principal, self.scope)
        if self.admin:
            require_admin(viewer.principal)
        check_path_ids(request)
        return viewer


async def form_lists(request: Request) -> dict[str, list[str]]:
    """An urlencoded form's fields with every value of a repeated name (checkboxes), bounded
    like every body.

    A multipart body is not read here: its route streams it (file uploads), and
    its CSRF token comes in the header.
    """
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    raw = await read_body(request, services_of(request).ctx.settings.max_json_body_bytes)
    lists: dict[str, list[str]] = {}
    try:
        pairs = parse_qsl(raw.decode("utf-8"), errors="strict", max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    for key, value in pairs:
        lists.setdefault(key, []).append(value)
    return lists


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of a repeated name)."""
    return {key: values[0] for key, values in (await form_lists(request)).items()}


@dataclass(frozen=True)
class Change:
    """A page route that changes something: ``Depends(Change("sandboxes:write", audit="sandbox.kill"))``.

    ``audit`` is the API's action for the same change (None only for changes the
    API does not audit either). ``admin`` changes refuse members.
    """

    scope: str | None
    audit: str | Audited | None = None
    admin: bool = False

    async def __call__(self, request: Request) -> Viewer:
        declared = Audited(self.audit) if isinstance(self.audit, str) else self.audit
        if declared is not None:
            # A page answers success in more ways than the API (a redirect, a fragment): any is it.
            declared.attach(request).from_page = True
        viewer = await viewer_of(request)
        if note := note_of(request):
            note.principal = viewer.principal
            if declared is not None and declared.target_is_caller:
                note.target_id = viewer.principal.user_id
        presented = request.headers.get("x-csrf-token") or (await form_fields(request)).get("csrf_token")
        if not same_origin(request, strict=True) or not viewer.csrf_ok(presented):
            raise PermissionDeniedError("cross-site request refused: missing or wrong CSRF token",
                                        details={"reason": "csrf"})
        draw(request, viewer.principal, (Bucket.REQUESTS,))
        require_scope(viewer.principal, self.scope)
        if self.admin:
            require_admin(viewer.principal)
        check_path_ids(request)
        allowed_to_change(request)
        return viewer
