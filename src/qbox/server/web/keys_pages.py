"""The API Keys page: the keys the viewer may see, creating one (its secret shown once), revoking.

The list is what ``GET /v1/api-keys`` shows the viewer (a member their own
keys, an admin everyone's), never a secret: only its hash is kept. A new key
is made by the same service as ``POST /v1/api-keys``, and the page that answers
the form is the only place its secret ever appears. Revoking asks first (the
button's ``hx-confirm``) and is the API's revoke.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.core.asgi import field_errors
from qbox.core.errors import ValidationError
from qbox.core.scopes import WILDCARD
from qbox.server.http.api_keys import CreateKeyBody, key_wire
from qbox.server.http.deps import services_of
from qbox.server.web.access import Change, Page, Viewer, form_lists
from qbox.server.web.render import is_htmx, render

router = APIRouter(include_in_schema=False)

MAX_DAYS = 3650
# The API's field names, as the form calls them.
_FORM_FIELD = {"expiresAt": "expires_days", "userId": "name"}


def _offered_scopes(viewer: Viewer) -> list[str]:
    """The scopes a key of the viewer's may hold (more is refused by the service anyway)."""
    return sorted(viewer.principal.effective)


async def _keys(request: Request, viewer: Viewer) -> list[dict[str, Any]]:
    services = services_of(request)
    now = services.ctx.clock()
    return [key_wire(key, owner, now) for key, owner in await services.keys.find(viewer.principal)]


async def _page(request: Request, viewer: Viewer, *, status: int = 200, form: dict[str, Any] | None = None,
                errors: dict[str, str] | None = None) -> Response:
    return render(request, "keys/index.html", viewer, status=status, keys=await _keys(request, viewer),
                  scopes=_offered_scopes(viewer), wildcard=WILDCARD, max_days=MAX_DAYS,
                  form=form or {"name": "", "scopes": [], "expires_days": ""}, errors=errors or {})


@router.get("/keys")
async def keys_page(request: Request, viewer: Viewer = Depends(Page("api-keys:read"))) -> Response:
    return await _page(request, viewer)


def _days(text: str) -> tuple[int | None, str | None]:
    """The form's expiry: empty for never, else a whole number of days; or the problem with it."""
    if not text.strip():
        return None, None
    try:
        days = int(text.strip())
    except ValueError:
        return None, "enter a whole number of days, or leave it empty for no expiry"
    if not 1 <= days <= MAX_DAYS:
        return None, f"between 1 and {MAX_DAYS} days"
    return days, None


@router.post("/keys")
async def create_key(request: Request, viewer: Viewer = Depends(
        Change("api-keys:write", audit="api_key.create"))) -> Response:
    fields = await form_lists(request)
    name, scopes = (fields.get("name") or [""])[0].strip(), fields.get("scopes", [])
    expires_days = (fields.get("expires_days") or [""])[0]
    form = {"name": name, "scopes": scopes, "expires_days": expires_days}
    services = services_of(request)
    days, days_problem = _days(expires_days)
    expires = services.ctx.clock() + timedelta(days=days) if days else None
    errors: dict[str, str] = {}
    try:
        body = CreateKeyBody.model_validate({"name": name, "scopes": scopes, "expiresAt": expires})
    except pydantic.ValidationError as exc:
        errors = {_FORM_FIELD.get(k, k): v for k, v in field_errors(list(exc.errors()))[0].items()}
    if days_problem:
        errors["expires_days"] = days_problem
    if errors:
        return await _page(request, viewer, status=400, form=form, errors=errors)
    try:
        key, owner, secret = await services.keys.create(viewer.principal, name=body.name, scopes=body.scopes,
                                                        expires_at=body.expires_at)
    except ValidationError as exc:
        problems = exc.field_errors or {"name": exc.message}
        return await _page(request, viewer, status=400, form=form,
                           errors={_FORM_FIELD.get(k, k): v for k, v in problems.items()})
    return render(request, "keys/created.html", viewer, status=201,
                  key=key_wire(key, owner, services.ctx.clock()), secret=secret)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, viewer: Viewer = Depends(
        Change("api-keys:write", audit="api_key.revoke"))) -> Response:
    services = services_of(request)
    key, owner = await services.keys.revoke(viewer.principal, key_id)
    if not is_htmx(request):
        return RedirectResponse("/keys", status_code=303)
    return render(request, "keys/_row.html", viewer, key=key_wire(key, owner, services.ctx.clock()))
