"""Request plumbing shared by the routers: the caller's identity and JSON bodies."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pydantic
from fastapi import Depends, Request

from qbox.core.asgi import field_errors
from qbox.core.errors import (
    AuthenticationError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ValidationError,
)
from qbox.core.scopes import grants
from qbox.server.services.keys import Principal, principal_for_secret
from qbox.server.services.registry import Services

MAX_JSON_BODY = 1024 * 1024
M = TypeVar("M", bound=pydantic.BaseModel)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def require(scope: str | None) -> Any:
    """Dependency: the authenticated principal, which must hold ``scope`` (None: any valid key)."""

    async def authenticate(request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer qbox_…'")
        services = services_of(request)
        async with services.ctx.sessions() as session:
            principal = await principal_for_secret(session, token)
        if principal is None:
            raise AuthenticationError("invalid, revoked or expired API key")
        if scope is not None and not grants(principal.scopes, scope):
            raise PermissionDeniedError(
                f"api key missing required scope: {scope}",
                details={"requiredScope": scope, "grantedScopes": list(principal.scopes)},
            )
        request.state.principal = principal
        return principal

    return Depends(authenticate)


async def json_body(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    """Parse the body as JSON whatever its Content-Type (curl's ``-d`` sends a form type)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise PayloadTooLargeError(f"request body over {MAX_JSON_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_JSON_BODY:
        raise PayloadTooLargeError(f"request body over {MAX_JSON_BODY} bytes")
    if not raw.strip():
        if not allow_empty:
            raise ValidationError.for_fields({"body": "a JSON object is required"})
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationError.for_fields({"body": f"malformed JSON: {exc}"},
                                             "request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ValidationError.for_fields({"body": "must be a JSON object"})
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        fields, _ = field_errors(list(exc.errors()))
        raise ValidationError.for_fields(fields, "invalid request: " + "; ".join(
            f"{k}: {v}" for k, v in fields.items())) from exc
