"""The Templates pages: the list, a form that builds one from an image, and a template's page.

Every page asks the templates service what ``/v1/templates`` asks it, with
the viewer's principal, and shows the API's body (``views.template``): a
member sees their own templates and the public ones, and any other id is the
API's 404. The form is read into the API's own body model
(``TemplateBody``), so a page accepts exactly what ``POST /v1/templates``
accepts; its steps are written one a line (``RUN``, ``USER``, ``ENV``,
``WORKDIR``; a line without a keyword is a command). A template's page
streams its build log while it builds (``/log/stream``: server-sent events
relaying the service's follow, read by ``static/templates.js``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from qbox.core.asgi import field_errors
from qbox.core.errors import NotFoundError, QboxError, ValidationError
from qbox.server.db.tables import Template
from qbox.server.http import views
from qbox.server.http.auditing import describe
from qbox.server.http.deps import services_of
from qbox.server.http.schemas import TemplateBody
from qbox.server.http.templates import create_from_body, described
from qbox.server.services.template_access import may_change, owner_shown
from qbox.server.services.templates import RegistryLogin, TemplateChange
from qbox.server.web.access import Change, Page, Viewer, form_fields
from qbox.server.web.render import is_htmx, render

router = APIRouter(include_in_schema=False)

READ = Page("templates:read")
_NUMBERS = ("defaultVcpus", "defaultMemoryMb", "defaultDiskMb", "readyTimeoutS")
# Checkboxes: sent when ticked, missing when not.
_CHECKBOXES = ("allowInternetAccess", "enableSsh", "public")
# What a new form starts with: the API's defaults.
_DEFAULTS = {"defaultVcpus": "1", "defaultMemoryMb": "512", "defaultDiskMb": "2048", "readyTimeoutS": "30",
             "user": "user", "runtime": "crun", "allowInternetAccess": "on", "codeInterpreter": "lazy",
             "warmPoolEager": "on"}
# The API's names for the pool's fields (its errors) and the form's (flat) ones.
_FORM_NAMES = {"warmPool": "warmPoolSize", "warmPool.size": "warmPoolSize", "warmPool.eager": "warmPoolEager"}
# Pydantic's pattern message quotes a regular expression; a person reads these instead.
_PATTERN_HINTS = {
    "name": "use 1–63 lowercase letters, digits, - and _, starting with a letter or digit",
    "user": "an account name: letters, digits, _ . -, at most 32, not starting with . or -",
}


# --- the list ------------------------------------------------------------------------------


@router.get("/templates")
async def template_list(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    templates = await _shown_all(request, viewer, await services_of(request).templates.find(viewer.principal))
    page = "templates/_table.html" if is_htmx(request) else "templates/list.html"
    return render(request, page, viewer, templates=templates,
                  refreshing=any(t["status"] == "building" or _filling(t) for t in templates))


def _filling(template: dict[str, Any]) -> bool:
    """A warm pool not yet (or no longer) what it should be: its counts are about to change."""
    pool = template.get("warmPool") or {}
    return bool(pool.get("booting")) or pool.get("ready", 0) != pool.get("size", 0)


# --- creating ------------------------------------------------------------------------------


@router.get("/templates/new")
async def new_template(request: Request, viewer: Viewer = Depends(Page("templates:write"))) -> Response:
    return _form(request, viewer, dict(_DEFAULTS))


@router.post("/templates")
async def create_template(
    request: Request, viewer: Viewer = Depends(Change("templates:write", audit="template.create")),
) -> Response:
    fields = await form_fields(request)
    try:
        body, login = body_of(fields)
        describe(request, described(body))
        template = await create_from_body(request, viewer.principal, body, login)
    except QboxError as exc:
        if exc.status >= 500:
            raise
        # The form again, as it was filled in (but the password), with what was wrong.
        return _form(request, viewer, fields, error=exc, status=exc.status)
    return RedirectResponse(f"/templates/{template.id}", status_code=303)


def _form(request: Request, viewer: Viewer, values: dict[str, str], *, error: QboxError | None = None,
          status: int = 200) -> Response:
    problems = error.field_errors if isinstance(error, ValidationError) else {}
    if error is not None and not problems and isinstance(error.details.get("field"), str):
        problems = {str(error.details["field"]): error.message}
    problems = {_FORM_NAMES.get(key, key): message for key, message in problems.items()}
    values = {k: v for k, v in values.items() if k != "registryPassword"}
    return render(request, "templates/new.html", viewer, status=status, values=values,
                  error=error.message if error is not None else None, problems=problems)


def body_of(fields: dict[str, str]) -> tuple[TemplateBody, RegistryLogin | None]:
    """The API's body for a filled-in form (its checks, its messages), and the registry login."""
    problems: dict[str, str] = {}
    data: dict[str, Any] = {key: fields[key].strip() for key in ("name", "imageRef", "user", "workdir",
                                                                 "runtime", "codeInterpreter")
                            if fields.get(key, "").strip()}
    for key in ("startCmd", "readyCmd"):
        if fields.get(key, "").strip():
            data[key] = fields[key]
    for key in _NUMBERS:
        if fields.get(key, "").strip():
            data[key] = fields[key].strip()
    for key in _CHECKBOXES:
        data[key] = key in fields
    data["tags"] = [t.strip() for t in fields.get("tags", "").split(",") if t.strip()]
    if fields.get("warmPoolSize", "").strip():
        data["warmPool"] = {"size": fields["warmPoolSize"].strip(), "eager": "warmPoolEager" in fields}
    for key, parse in (("steps", steps_of), ("env", pairs_by_line), ("hostSelector", _pairs_by_comma)):
        try:
            data[key] = parse(fields.get(key, ""))
        except ValueError as exc:
            problems[key] = str(exc)
    _source_of(fields, data, problems)
    username, password = fields.get("registryUsername", "").strip(), fields.get("registryPassword", "")
    if username or password:
        data["registryCredentials"] = {"username": username, "password": password}
    try:
        body = TemplateBody.model_validate(data)
    except pydantic.ValidationError as exc:
        found, _ = field_errors(list(exc.errors(include_url=False)))
        for key, message in found.items():
            problems.setdefault(*_readable(key, message))
    if problems:
        raise ValidationError.for_fields(problems, "the template was not created: check the marked fields")
    login = body.registry_credentials
    return body, (RegistryLogin(login.username, login.password.get_secret_value()) if login else None)


def _source_of(fields: dict[str, str], data: dict[str, Any], problems: dict[str, str]) -> None:
    """The form's source: an image (and steps), or a Dockerfile (and build args) instead."""
    if fields.get("source") != "dockerfile":
        if "imageRef" not in data:
            problems["imageRef"] = "required (or choose a Dockerfile)"
        return
    if not fields.get("dockerfile", "").strip():
        problems["dockerfile"] = "required"
    if data.get("steps"):
        problems["steps"] = "build steps go with an image; a Dockerfile has its own"
    for key in ("imageRef", "steps", "user", "workdir"):
        data.pop(key, None)
    data["dockerfile"] = fields.get("dockerfile", "").replace("\r\n", "\n")
    try:
        data["buildArgs"] = pairs_by_line(fields.get("buildArgs", ""))
    except ValueError as exc:
        problems["buildArgs"] = str(exc)


def _readable(key: str, message: str) -> tuple[str, str]:
    """A pydantic error as the form's field and a sentence (``steps.2.run`` is step 3)."""
    message = "required" if message == "Field required" else message.removeprefix("Value error, ")
    field, _, rest = key.partition(".")
    if field in _PATTERN_HINTS and message.startswith("String should match pattern"):
        message = _PATTERN_HINTS[field]
    if field == "steps" and rest.split(".")[0].isdigit():
        return field, f"step {int(rest.split('.')[0]) + 1}: {message}"
    if field == "registryCredentials":
        return "registryUsername", f"registry {rest or 'login'}: {message}"
    if field in _FORM_NAMES:
        return _FORM_NAMES[key if key in _FORM_NAMES else field], message
    return field, message


def steps_of(text: str) -> list[dict[str, Any]]:
    """The build steps a form's step lines describe.

    ``RUN cmd`` (or a line with no keyword) runs ``cmd`` with /bin/sh, as root
    or as the user a ``USER name`` line named before it; ``ENV NAME=value``
    and ``WORKDIR /path`` are steps of their own. A line ending in ``\\``
    goes on to the next (as in a shell). Blank lines are skipped.
    """
    steps: list[dict[str, Any]] = []
    user = "root"
    lines = text.replace("\r\n", "\n").split("\n")
    number = 0
    while number < len(lines):
        start = number
        line = lines[number]
        while line.endswith("\\") and number + 1 < len(lines):
            number += 1
            line += "\n" + lines[number]
        number += 1
        keyword, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        where = f"line {start + 1}"
        if not line.strip():
            continue
        if keyword == "USER":
            if not rest:
                raise ValueError(f"{where}: USER needs an account name")
            user = rest
        elif keyword == "ENV":
            name, sep, value = rest.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{where}: write ENV NAME=value")
            steps.append({"env": {name.strip(): value}})
        elif keyword == "WORKDIR":
            if not rest:
                raise ValueError(f"{where}: WORKDIR needs a path")
            steps.append({"workdir": rest})
        else:
            command = rest if keyword == "RUN" else line.strip()
            if not command:
                raise ValueError(f"{where}: RUN needs a command")
            steps.append({"run": command, "user": user})
    return steps


def pairs_by_line(text: str) -> dict[str, str]:
    """A form's NAME=value lines (blank lines skipped); a line without ``=`` is a ValueError."""
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"line {number}: write NAME=value")
        pairs[name.strip()] = value
    return pairs


def _pairs_by_comma(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r}: write key=value")
        pairs[key.strip()] = value.strip()
    return pairs



# --- one template --------------------------------------------------------------------------


@router.get("/templates/{template_id}")
async def template_page(template_id: str, request: Request, viewer: Viewer = Depends(READ)) -> Response:
    """The page; for htmx, its summary alone (what the page swaps in when a build ends)."""
    templates = services_of(request).templates
    row = await templates.get(viewer.principal, template_id)
    context: dict[str, Any] = {"tpl": await _shown(request, viewer, row),
                               "changeable": may_change(viewer.principal, row)}
    if is_htmx(request):
        return render(request, "templates/_summary.html", viewer, **context)
    log = await templates.build_log(viewer.principal, template_id)
    return render(request, "templates/detail.html", viewer, log=log, **context)


@router.get("/templates/{template_id}/log/stream")
async def log_stream(template_id: str, request: Request, viewer: Viewer = Depends(READ)) -> Response:
    """The build log as server-sent events: ``log`` events (its lines so far, then each new
    one) until the build ends, then one ``end`` event whose data is the template's status."""
    templates = services_of(request).templates
    lines = await templates.follow_build_log(viewer.principal, template_id)

    async def events() -> AsyncIterator[str]:
        async for chunk in lines:
            yield "event: log\n" + "".join(f"data: {line}\n" for line in chunk.splitlines()) + "\n"
        try:
            status = (await templates.get(viewer.principal, template_id)).status
        except NotFoundError:
            status = "deleted"  # while we followed it
        yield f"event: end\ndata: {status}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/templates/{template_id}/rebuild")
async def rebuild(template_id: str, request: Request,
                  viewer: Viewer = Depends(Change("templates:write", audit="template.rebuild"))) -> Response:
    await services_of(request).templates.rebuild(viewer.principal, template_id, None)
    return _go(request, f"/templates/{template_id}")


@router.post("/templates/{template_id}/delete")
async def delete(template_id: str, request: Request,
                 viewer: Viewer = Depends(Change("templates:write", audit="template.delete"))) -> Response:
    await services_of(request).templates.delete(viewer.principal, template_id)
    return _go(request, "/templates")



@router.get("/templates/{template_id}/pool")
async def pool_status(template_id: str, request: Request, viewer: Viewer = Depends(READ)) -> Response:
    """The warm pool's counts (what the page polls)."""
    row = await services_of(request).templates.get(viewer.principal, template_id)
    return render(request, "templates/_pool.html", viewer, tpl=await _shown(request, viewer, row))


@router.post("/templates/{template_id}/pool")
async def set_pool(template_id: str, request: Request,
                   viewer: Viewer = Depends(Change("templates:write", audit="template.update"))) -> Response:
    """The pool form: the same change as ``PATCH /v1/templates/{id}`` with ``warmPool`` and
    ``codeInterpreter``, under the same rules (the service's)."""
    change = pool_change(await form_fields(request))
    describe(request, " ".join(f"{key}={value}" for key, value in (
        ("warmPool.size", change.warm_pool_size), ("warmPool.eager", change.warm_pool_eager),
        ("codeInterpreter", change.code_interpreter)) if value is not None).lower())
    row = await services_of(request).templates.update(viewer.principal, template_id, change)
    if not is_htmx(request):
        return RedirectResponse(f"/templates/{template_id}", status_code=303)
    return render(request, "templates/_pool.html", viewer, tpl=await _shown(request, viewer, row))


def pool_change(fields: dict[str, str]) -> TemplateChange:
    """The pool form as a PATCH: the size when given (admins see that field), the checkbox
    (missing: unticked), the interpreter's mode."""
    size_text = fields.get("size", "").strip()
    mode = fields.get("codeInterpreter", "").strip() or None
    problems: dict[str, str] = {}
    if size_text and not size_text.isdigit():
        problems["size"] = "the pool size is a whole number, 0 or more"
    if mode not in (None, "lazy", "eager"):
        problems["codeInterpreter"] = "choose lazy or eager"
    if problems:
        raise ValidationError.for_fields(problems, "the pool was not changed: check the marked fields")
    return TemplateChange(code_interpreter=mode, warm_pool_size=int(size_text) if size_text else None,
                          warm_pool_eager="eager" in fields)


def _go(request: Request, target: str) -> Response:
    """After a change: htmx navigates (the page shows the new state); a plain form is redirected."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _shown(request: Request, viewer: Viewer, template: Template) -> dict[str, Any]:
    """The API's body for the viewer (``GET /v1/templates/{id}``), its warm pool counted."""
    return (await _shown_all(request, viewer, [template]))[0]


async def _shown_all(request: Request, viewer: Viewer, templates: list[Template]) -> list[dict[str, Any]]:
    pools = await services_of(request).pools.views(templates)
    return [views.template(t, owner_shown(viewer.principal, t), pools[t.id]) for t in templates]
