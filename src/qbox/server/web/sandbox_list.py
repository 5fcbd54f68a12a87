"""The Sandboxes page, the home page after sign-in: the live list, spawning, killing, extending.

``GET /sandboxes`` lists the sandboxes the viewer may see (``GET /v1/sandboxes``:
a member their own, an admin everyone's with the owner's email), filtered by
the query's ``status``, ``template`` and ``q`` (an id or a name label), so a
filtered list is a link to share. Its table body polls ``GET /sandboxes/rows``
with the same query. The changes are the API's own: ``POST /sandboxes`` spawns
as ``POST /v1/sandboxes`` does (the same validation, quotas and spawns bucket),
``POST /sandboxes/{id}/kill`` and ``POST /sandboxes/{id}/timeout`` are
``DELETE /v1/sandboxes/{id}`` and its set-timeout, audited under the same actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.core.asgi import field_errors
from qbox.core.errors import ValidationError
from qbox.core.states import LIVE_STATES, SandboxState
from qbox.core.timefmt import to_wire
from qbox.server.http import views
from qbox.server.http.access import Bucket, draw
from qbox.server.http.auditing import describe
from qbox.server.http.deps import services_of
from qbox.server.http.schemas import SpawnBody, TimeoutBody
from qbox.server.services.sandboxes import SpawnRequest
from qbox.server.services.template_access import owner_shown
from qbox.server.web.access import Change, Page, Viewer, form_fields
from qbox.server.web.render import is_htmx, render

router = APIRouter(include_in_schema=False)

STATES = [state.value for state in SandboxState]
# The page shows the newest this many; the filters narrow the rest down.
SHOWN = 200
_LIVE = {state.value for state in LIVE_STATES}
_NUMBERS = {"vcpus": "vcpus", "memoryMb": "memory_mb", "timeoutSeconds": "timeout_seconds"}
_INTERNET = {"": None, "on": True, "off": False}
# After a change from the list, its table body refreshes at once (``hx-trigger``).
_CHANGED = "sandboxes-changed"


@dataclass(frozen=True)
class Filters:
    """The list's query: what ``/sandboxes`` and ``/sandboxes/rows`` both take."""

    status: str = ""
    template: str = ""
    q: str = ""

    @classmethod
    def of(cls, request: Request) -> Filters:
        query = request.query_params
        filters = cls(query.get("status", "").strip(), query.get("template", "").strip()[:80],
                      query.get("q", "").strip()[:200])
        if filters.status and filters.status not in STATES:
            raise ValidationError.for_fields({"status": f"must be one of {', '.join(sorted(STATES))}"})
        return filters

    @property
    def query(self) -> str:
        return urlencode({k: v for k, v in (("status", self.status), ("template", self.template),
                                            ("q", self.q)) if v})

    def matches(self, sandbox: dict[str, Any]) -> bool:
        needle = self.q.lower()
        return not needle or needle in sandbox["id"].lower() or needle in sandbox["labels"].get("name", "").lower()


async def _rows(request: Request, viewer: Viewer, filters: Filters) -> dict[str, Any]:
    """The list as ``GET /v1/sandboxes`` shows it to the viewer, with templates' names and owners."""
    services = services_of(request)
    found = await services.sandboxes.find(viewer.principal, status=filters.status or None,
                                          template_id=filters.template or None,
                                          limit=None if filters.q else SHOWN + 1)
    templates = await services.templates.by_id({row.template_id for row in found})
    owners = {user.id: user.email for user in await services.users.find()} if viewer.is_admin else {}
    rows = []
    for row in found:
        sandbox = views.sandbox(row, templates.get(row.template_id))
        if filters.matches(sandbox):
            template = templates.get(row.template_id)
            rows.append({"sandbox": sandbox, "template": template.name if template else row.template_id,
                         "owner": owners.get(row.owner_id, row.owner_id) if viewer.is_admin else None,
                         "live": row.status in _LIVE})
    return {"rows": rows[:SHOWN], "more": len(rows) > SHOWN, "filters": filters,
            "columns": 8 if viewer.is_admin else 7}


async def _templates(request: Request, viewer: Viewer) -> list[dict[str, Any]]:
    """The templates the viewer may see (``GET /v1/templates``)."""
    found = await services_of(request).templates.find(viewer.principal)
    return [views.template(t, owner_shown(viewer.principal, t)) for t in found]


async def _page(request: Request, viewer: Viewer, *, status: int = 200, form: dict[str, str] | None = None,
                problems: dict[str, str] | None = None) -> Response:
    filters = Filters.of(request)
    templates = await _templates(request, viewer)
    return render(request, "sandboxes/list.html", viewer, status=status, templates=templates, states=STATES,
                  **await _rows(request, viewer, filters), **_spawn_context(request, templates, form, problems))


def _spawn_context(request: Request, templates: list[dict[str, Any]], form: dict[str, str] | None,
                   problems: dict[str, str] | None) -> dict[str, Any]:
    settings = services_of(request).ctx.settings
    return {"spawnable": [t for t in templates if t["status"] == "ready"], "form": form or {},
            "problems": problems or {}, "limits": {"vcpus": settings.max_vcpus,
                                                   "memoryMb": settings.max_memory_mb,
                                                   "timeoutSeconds": settings.max_timeout_seconds}}


@router.get("/sandboxes")
async def sandboxes_page(request: Request, viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    return await _page(request, viewer)


@router.get("/sandboxes/rows")
async def sandbox_rows(request: Request, viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    return render(request, "sandboxes/_rows.html", viewer, **await _rows(request, viewer, Filters.of(request)))


def _whole_number(name: str, text: str) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValidationError.for_fields({name: "must be a whole number"}) from None


def _labels(fields: dict[str, str]) -> dict[str, str]:
    """``key=value`` a line, then the name field as the ``name`` label."""
    labels: dict[str, str] = {}
    for number, line in enumerate(fields.get("labels", "").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValidationError.for_fields({"labels": f"line {number}: write key=value"})
        labels[key.strip()] = value.strip()
    if name := fields.get("name", "").strip():
        labels["name"] = name
    return labels


def spawn_body(fields: dict[str, str], max_timeout: int) -> SpawnBody:
    """The form as the API's spawn body, checked as ``POST /v1/sandboxes`` checks it.

    Every field's problem is said at once, not only the first.
    """
    problems: dict[str, str] = {}
    numbers: dict[str, int | None] = {}
    for name in _NUMBERS:
        try:
            numbers[name] = _whole_number(name, fields.get(name, "").strip())
        except ValidationError as exc:
            problems.update(exc.field_errors)
    try:
        labels = _labels(fields)
    except ValidationError as exc:
        problems.update(exc.field_errors)
        labels = {}
    internet = fields.get("allowInternetAccess", "")
    if internet not in _INTERNET:
        problems["allowInternetAccess"] = "must be on, off or the template's default"
    template_id = fields.get("templateId", "").strip()
    if not template_id:
        problems["templateId"] = "choose a template"
    body = None
    try:
        body = SpawnBody.model_validate({"templateId": template_id or "-", "labels": labels,
                                         "allowInternetAccess": _INTERNET.get(internet), **numbers},
                                        strict=True)
    except pydantic.ValidationError as exc:
        for name, message in field_errors(list(exc.errors()))[0].items():
            problems.setdefault(name, message)
    timeout = numbers["timeoutSeconds"]
    if timeout is not None and timeout > max_timeout:
        problems.setdefault("timeoutSeconds", f"must be at most {max_timeout}")
    if problems or body is None:
        raise ValidationError.for_fields(problems)
    return body


@router.post("/sandboxes")
async def spawn(request: Request,
                viewer: Viewer = Depends(Change("sandboxes:create", audit="sandbox.create"))) -> Response:
    draw(request, viewer.principal, (Bucket.SPAWNS,))  # as the API's spawn route draws it
    services = services_of(request)
    fields = await form_fields(request)
    try:
        body = spawn_body(fields, services.ctx.settings.max_timeout_seconds)
        sandbox = await services.sandboxes.spawn(viewer.principal, SpawnRequest(
            template_id=body.template_id, timeout_seconds=body.timeout_seconds, labels=body.labels,
            vcpus=body.vcpus, memory_mb=body.memory_mb,
            allow_internet_access=body.allow_internet_access), wait_seconds=None)
    except ValidationError as exc:
        return await _refused_form(request, viewer, fields, exc)
    target = f"/sandboxes/{sandbox.id}"
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _refused_form(request: Request, viewer: Viewer, fields: dict[str, str],
                        exc: ValidationError) -> Response:
    """The spawn form again, as it was filled in, with what is wrong next to each field (400)."""
    problems = exc.field_errors or {"form": exc.message}
    form = {k: v for k, v in fields.items() if k != "csrf_token"}
    if is_htmx(request):
        templates = await _templates(request, viewer)
        return render(request, "sandboxes/_spawn_form.html", viewer, status=400,
                      **_spawn_context(request, templates, form, problems))
    return await _page(request, viewer, status=400, form=form, problems=problems)



def _done(request: Request, message: str, back: str) -> Response:
    """A change from the list: a note in the page's alert area and the rows refreshed (htmx), or back."""
    if is_htmx(request):
        return render(request, "_alert.html", None, code=200, title="Done", message=message, fields={},
                      headers={"HX-Retarget": "#alerts", "HX-Reswap": "innerHTML", "HX-Trigger": _CHANGED})
    return RedirectResponse(back, status_code=303)


def _back(fields: dict[str, str]) -> str:
    """Where a plain form post returns to: a sandboxes page of ours, else the list."""
    target = fields.get("next", "")
    if target.startswith("/sandboxes") and "//" not in target and "\\" not in target:
        return target
    return "/sandboxes"


@router.post("/sandboxes/{sandbox_id}/kill")
async def kill(sandbox_id: str, request: Request,
               viewer: Viewer = Depends(Change("sandboxes:delete", audit="sandbox.kill"))) -> Response:
    sandbox = await services_of(request).sandboxes.kill(viewer.principal, sandbox_id)
    return _done(request, f"sandbox {sandbox.id} is {sandbox.status}.", _back(await form_fields(request)))


@router.post("/sandboxes/{sandbox_id}/timeout")
async def set_timeout(sandbox_id: str, request: Request,
                      viewer: Viewer = Depends(Change("sandboxes:create", audit="sandbox.timeout"))) -> Response:
    fields = await form_fields(request)
    seconds = _whole_number("timeoutSeconds", fields.get("timeoutSeconds", "").strip())
    if seconds is None:
        raise ValidationError.for_fields({"timeoutSeconds": "enter the new timeout in seconds (0: never)"})
    try:
        body = TimeoutBody.model_validate({"timeoutSeconds": seconds}, strict=True)
    except pydantic.ValidationError as exc:
        found, _ = field_errors(list(exc.errors()))
        raise ValidationError.for_fields(found) from exc
    describe(request, f"timeoutSeconds={body.timeout_seconds}")
    services = services_of(request)
    limit = services.ctx.settings.max_timeout_seconds
    if body.timeout_seconds > limit:
        raise ValidationError.for_fields({"timeoutSeconds": f"must be at most {limit}"})
    sandbox = await services.sandboxes.set_timeout(viewer.principal, sandbox_id, body.timeout_seconds)
    ends = (f"it now ends {to_wire(sandbox.deadline_at)}" if sandbox.deadline_at
            else "it no longer ends by itself")
    return _done(request, f"sandbox {sandbox.id}'s timeout is {body.timeout_seconds} s: {ends}.", _back(fields))
