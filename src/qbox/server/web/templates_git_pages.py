"""The dashboard's "From git" form: a template built from a Dockerfile in a git repository,
as ``POST /v1/templates/from-git`` makes it (the form is read into the API's body model, and
the same service answers; an error comes back on the form, in words, next to its field).

Its routes come before the templates pages' ``/templates/{template_id}``.
"""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.core.asgi import field_errors
from qbox.core.errors import QboxError, ValidationError
from qbox.core.ids import template_id_for
from qbox.server.http.auditing import describe, note_of
from qbox.server.http.deps import services_of
from qbox.server.http.templates_git import GitTemplateBody
from qbox.server.services.git_sources import redacted_url
from qbox.server.web.access import Change, Page, Viewer, form_fields
from qbox.server.web.render import render
from qbox.server.web.templates_pages import pairs_by_line

router = APIRouter(include_in_schema=False)

# What a new form starts with: the published SDK's defaults.
_DEFAULTS = {"ref": "main", "contextPath": ".", "defaultVcpus": "2", "defaultMemoryMb": "2048",
             "readyTimeoutS": "20"}
_TEXTS = ("name", "url", "ref", "dockerfilePath", "contextPath")
_NUMBERS = ("defaultVcpus", "defaultMemoryMb", "readyTimeoutS")
# The service's error codes, and the field of the form each is about.
_FIELD_OF_CODE = {"git_url_invalid": "url", "repo_not_found": "url", "repo_unauthorized": "url",
                  "git_resolve_unavailable": "url", "ref_not_found": "ref",
                  "build_args_invalid": "buildArgs"}


@router.get("/templates/new-from-git")
async def new_from_git(request: Request, viewer: Viewer = Depends(Page("templates:write"))) -> Response:
    return _form(request, viewer, dict(_DEFAULTS))


@router.post("/templates/from-git")
async def create_from_git(
    request: Request, viewer: Viewer = Depends(Change("templates:write", audit="template.create_from_git")),
) -> Response:
    fields = await form_fields(request)
    try:
        body = body_of(fields)
        describe(request, f"name={body.name} source=git url={redacted_url(body.url)} ref={body.ref[:256]!r}")
        if note := note_of(request):
            note.target_id = template_id_for(body.name)
        result = await services_of(request).git_templates.create(viewer.principal, body.to_request())
    except QboxError as exc:
        # A git server that did not answer is said on the form too: the user may try again.
        if exc.status >= 500 and exc.code != "git_resolve_unavailable":
            raise
        return _form(request, viewer, fields, error=exc, status=exc.status)
    return RedirectResponse(f"/templates/{result.template.id}", status_code=303)


def body_of(fields: dict[str, str]) -> GitTemplateBody:
    """The API's body for a filled-in form: its checks, its messages."""
    data: dict[str, Any] = {key: fields.get(key, "").strip() for key in _TEXTS}
    for key in ("startCmd", "readyCmd"):
        if fields.get(key, "").strip():
            data[key] = fields[key]
    for key in _NUMBERS:
        if fields.get(key, "").strip():
            data[key] = fields[key].strip()
    data["enableSsh"] = "enableSsh" in fields
    data["tags"] = [t.strip() for t in fields.get("tags", "").split(",") if t.strip()]
    problems: dict[str, str] = {}
    try:
        data["buildArgs"] = pairs_by_line(fields.get("buildArgs", ""))
    except ValueError as exc:
        problems["buildArgs"] = str(exc)
    try:
        body = GitTemplateBody.model_validate(data)
    except pydantic.ValidationError as exc:
        found, _ = field_errors(list(exc.errors(include_url=False)))
        for key, message in found.items():
            message = "required" if message == "Field required" else message.removeprefix("Value error, ")
            if key == "name" and message.startswith("String should match pattern"):
                message = "use 1–63 lowercase letters, digits, - and _, starting with a letter or digit"
            problems.setdefault(key.partition(".")[0], message)
    if problems:
        raise ValidationError.for_fields(problems, "the template was not created: check the marked fields")
    return body


def _form(request: Request, viewer: Viewer, values: dict[str, str], *, error: QboxError | None = None,
          status: int = 200) -> Response:
    problems = error.field_errors if isinstance(error, ValidationError) else {}
    if error is not None and not problems:
        field = error.details.get("field") or _FIELD_OF_CODE.get(error.code)
        if isinstance(field, str):
            problems = {field: error.message}
    return render(request, "templates/new_git.html", viewer, status=status, values=values,
                  error=error.message if error is not None else None, problems=problems)
