"""The admins' pages: Users and Audit.

``/users`` lists every user as ``GET /v1/users`` shows them, with their live
sandboxes against their quota; ``POST /users`` adds one through the same
validation, service and ``user.create`` entry as ``POST /v1/users`` (a form
that fails comes back with its messages), and ``POST /users/{user_id}/disable``
disables one as the API does (their keys and sessions end with it; the page
asks first).

``/audit`` is ``GET /v1/audit`` as a table, newest first. Its filters are the
API's query parameters (``action``, ``actorId``, ``targetId``, ``from``, ``to``,
``limit``), so a filtered view is a link to share; ``cursor`` pages back by
the API's cursor and ``trail`` keeps the cursors of the newer pages, for the
way back. Above the table, the hash chain's check (``GET /v1/audit/verify``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import pydantic
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from qbox.core.asgi import field_errors
from qbox.core.errors import ConflictError, ValidationError
from qbox.core.scopes import ROLES
from qbox.core.timefmt import from_wire
from qbox.server.http.access import Access
from qbox.server.http.audit import entry_wire
from qbox.server.http.auditing import Audited
from qbox.server.http.deps import services_of
from qbox.server.http.users import CreateUserBody, user_wire
from qbox.server.services.audit import AuditQuery, encode_cursor
from qbox.server.web.access import Change, Page, Viewer, form_fields
from qbox.server.web.render import is_htmx, render

router = APIRouter(include_in_schema=False)

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000  # the API's own bound
# The way back through older pages; past this many the oldest steps are forgotten.
_MAX_TRAIL = 50
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FILTERS = ("action", "actorId", "targetId", "from", "to")


# --- users --------------------------------------------------------------------------


async def _user_rows(request: Request, viewer: Viewer) -> list[dict[str, Any]]:
    """``GET /v1/users``'s view of each user, with their quota report (``GET /v1/users/{id}/quota``)."""
    services = services_of(request)
    rows = []
    for user in await services.users.find():
        row = user_wire(user)
        row["quota"] = (await services.quotas.report(viewer.principal, user.id)).wire()
        rows.append(row)
    return rows


async def _users_page(request: Request, viewer: Viewer, *, status: int = 200, form: dict[str, str] | None = None,
                      errors: dict[str, str] | None = None, notice: str | None = None) -> Response:
    users = await _user_rows(request, viewer)
    if notice is None:
        notice = _notice(request, users)
    return render(request, "users/index.html", viewer, status=status, users=users, roles=ROLES,
                  form=form or {"email": "", "role": "member"}, errors=errors or {}, notice=notice)


def _notice(request: Request, users: list[dict[str, Any]]) -> str | None:
    """Who was just added, when the page was reached by the form's redirect (only a user listed)."""
    by_id = {user["id"]: user["email"] for user in users}
    added = request.query_params.get("added")
    return f"Added {by_id[added]}." if added in by_id else None


@router.get("/users")
async def users_page(request: Request, viewer: Viewer = Depends(Page("api-keys:read", admin=True))) -> Response:
    return await _users_page(request, viewer)


# The entry written with the new user says the answer's status: the form's redirect.
@router.post("/users", status_code=303)
async def add_user(request: Request,
                   viewer: Viewer = Depends(Change("api-keys:write", audit="user.create", admin=True))) -> Response:
    fields = await form_fields(request)
    form = {"email": fields.get("email", "").strip(), "role": fields.get("role", "member")}
    try:
        body = CreateUserBody.model_validate(
            {**form, "password": fields.get("password") or None}, strict=True)
    except pydantic.ValidationError as exc:
        errors, _ = field_errors(list(exc.errors()))
        return await _users_page(request, viewer, status=400, form=form, errors=errors)
    try:
        user = await services_of(request).users.create(body.email, body.role, body.password)
    except ValidationError as exc:
        return await _users_page(request, viewer, status=400, form=form,
                                 errors=exc.field_errors or {"email": exc.message})
    except ConflictError as exc:
        return await _users_page(request, viewer, status=409, form=form, errors={"email": exc.message})
    return RedirectResponse(f"/users?added={user.id}", status_code=303)


@router.post("/users/{user_id}/disable")
async def disable_user(user_id: str, request: Request,
                       viewer: Viewer = Depends(Change("api-keys:write", audit="user.disable", admin=True))
                       ) -> Response:
    user = await services_of(request).users.disable(viewer.principal, user_id)
    notice = f"Disabled {user.email}."
    if not is_htmx(request):
        # The page itself, not a redirect: the entry says 200, as the API's does.
        return await _users_page(request, viewer, notice=notice)
    return render(request, "users/_table.html", viewer, users=await _user_rows(request, viewer),
                  notice=notice, oob=True)


# --- audit --------------------------------------------------------------------------


def _time(filters: dict[str, str], name: str) -> datetime | None:
    """A filter's time as the API reads it (the form's inputs have no zone: UTC)."""
    if name not in filters:
        return None
    try:
        # An unencoded "+" of an offset arrives as a space.
        return from_wire(filters[name].replace(" ", "+"))
    except ValueError:
        raise ValidationError.for_fields({name: "not a time (like 2026-01-31T14:00, in UTC)"}) from None


def _limit(value: str | None) -> int:
    if not value:
        return DEFAULT_PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ValidationError.for_fields({"limit": f"a whole number from 1 to {MAX_PAGE_SIZE}"})
    return int(value)


def _cursors(value: str | None) -> list[str]:
    return [c for c in (value or "").split(",") if _CURSOR.match(c)][-_MAX_TRAIL:]


def _link(filters: dict[str, str], cursor: str | None = None, trail: list[str] | None = None) -> str:
    params = dict(filters)
    if cursor:
        params["cursor"] = cursor
    if trail:
        params["trail"] = ",".join(trail)
    return "/audit" + ("?" + urlencode(params) if params else "")


def _pages(filters: dict[str, str], cursor: str | None, trail: list[str], next_cursor: str | None) -> dict[str, Any]:
    """The pager's links: older (the API's next cursor), newer (back one step), newest."""
    older = _link(filters, next_cursor, [*trail, cursor] if cursor else trail) if next_cursor else None
    newer = None
    if cursor:
        newer = _link(filters, trail[-1], trail[:-1]) if trail else _link(filters)
    return {"number": len(trail) + (2 if cursor else 1), "older": older, "newer": newer,
            "newest": _link(filters) if cursor else None}


def _audited_actions(app: FastAPI) -> list[str]:
    """The actions routes declare (suggestions for the filter; other writers add a few more)."""
    actions: set[str] = set()
    for route in app.routes:
        if isinstance(route, APIRoute):
            actions.update(_actions(route.dependant))
    return sorted(actions)


def _actions(dependant: Dependant) -> Iterator[str]:
    for dependency in dependant.dependencies:
        owner = getattr(dependency.call, "__self__", dependency.call)
        declared = owner.audit if isinstance(owner, Access | Change) else owner
        if isinstance(declared, Audited):
            yield declared.action
        elif isinstance(declared, str):
            yield declared
        yield from _actions(dependency)


@router.get("/audit")
async def audit_page(request: Request, viewer: Viewer = Depends(Page("audit:read", admin=True))) -> Response:
    services = services_of(request)
    params = request.query_params
    filters = {name: value.strip() for name in _FILTERS if (value := params.get(name, "")).strip()}
    cursor = params.get("cursor") or None
    trail = _cursors(params.get("trail"))
    entries: list[dict[str, Any]] = []
    pages: dict[str, Any] = {"number": 1, "older": None, "newer": None, "newest": None}
    errors: dict[str, str] = {}
    try:
        since, until = _time(filters, "from"), _time(filters, "to")
        limit = _limit(params.get("limit"))
        if limit != DEFAULT_PAGE_SIZE:
            filters["limit"] = str(limit)
        rows, next_cursor = await services.audit.query(AuditQuery(
            since=since, until=until,
            actor_id=filters.get("actorId"), action=filters.get("action"), target_id=filters.get("targetId"),
            limit=limit, cursor=cursor))
    except ValidationError as exc:
        errors = exc.field_errors or {"filters": exc.message}
    else:
        entries = [entry_wire(row) for row in rows]
        pages = _pages(filters, cursor, trail, next_cursor)
    verification = await services.audit.verify()
    # Where a broken chain's first bad entry is: the page that starts with it.
    broken_at = (_link({}, encode_cursor(verification.first_bad_id + 1))
                 if verification.first_bad_id is not None else None)
    return render(request, "audit/index.html", viewer, status=400 if errors else 200,
                  entries=entries, filters=filters, form=_form_values(filters, params.get("limit")),
                  errors=errors, pages=pages, verification=verification, broken_at=broken_at,
                  users=[user_wire(u) for u in await services.users.find()],
                  actions=_audited_actions(request.app), page_sizes=PAGE_SIZES)


def _form_values(filters: dict[str, str], limit: str | None) -> dict[str, str]:
    """What the filter form shows: times as its inputs take them (UTC, no zone), bad values as given."""
    values = {name: filters.get(name, "") for name in _FILTERS}
    for name in ("from", "to"):
        with contextlib.suppress(ValidationError):
            if (when := _time(filters, name)) is not None:
                values[name] = when.strftime("%Y-%m-%dT%H:%M:%S")
    values["limit"] = limit or str(DEFAULT_PAGE_SIZE)
    return values
