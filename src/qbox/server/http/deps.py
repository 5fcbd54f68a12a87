"""Request plumbing shared by the routers: the services, the caller's address, JSON bodies.

Who may call a route: ``access``; its audit entry: ``auditing``.
"""

from __future__ import annotations

from typing import TypeVar

import pydantic
from fastapi import Request
from starlette.requests import HTTPConnection

from qbox.core import json_input
from qbox.core.asgi import field_errors
from qbox.core.errors import ValidationError
from qbox.server.http.body import read_body
from qbox.server.services.registry import Services

M = TypeVar("M", bound=pydantic.BaseModel)


def services_of(request: HTTPConnection) -> Services:
    services: Services = request.app.state.services
    return services


def client_ip(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


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
