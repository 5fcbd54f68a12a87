"""The OpenAPI document: what FastAPI derives, completed with what it cannot see.

The routes read their bodies by hand (``json_body``), refuse with the error
envelope instead of FastAPI's 422, authenticate in a dependency and serve the
shell as a WebSocket, so FastAPI alone would describe none of that. Here:

- a route declares its body with ``openapi_extra=request_body(Model)`` (the
  model ``json_body`` parses) or ``raw_body()``, the JSON it answers with
  ``responses=answers(200, response_models.X, 409)`` (with the errors only it
  sends), other media with ``media(200, "text/plain")``;
- every other error status is derived from what the route is: every route
  can answer 400 (the input edge refuses over-long URLs and malformed
  queries), an authenticated route 401/403/429, an ``{id}`` route 404, a
  route with a body 413, a route acting on a sandbox through its host
  whatever the host agent answers (409/422/503/507);
- FastAPI's 422 ``HTTPValidationError`` goes (the server answers 400);
- the security schemes (bearer key, the dashboard's session cookie) are
  declared and each operation says which it takes;
- the shell WebSocket is a ``GET`` operation marked ``x-websocket``;
- each creating ``POST`` links to the operations on what it created, for
  schemathesis' stateful runs.

``docs/openapi.json`` is this document; ``make openapi`` rewrites it.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import fastapi.routing
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from qbox.core import shell_protocol
from qbox.server.principal import HostCredential, Principal
from qbox.server.services.web_sessions import SESSION_COOKIE, SessionPrincipal

REF = "#/components/schemas/"
BEARER = "bearerKey"
HOST = "hostCredential"
COOKIE = "sessionCookie"
ERROR_SCHEMA = "Error"
SHELL_PATH = "/v1/sandboxes/{sandbox_id}/shell"
# Routes under this prefix act on one sandbox through its host agent and relay its errors.
DATA_PLANE_PREFIX = "/v1/sandboxes/{sandbox_id}/"

STATUS_TEXT = {
    400: "Invalid request (validation_error)",
    401: "Missing, invalid, revoked or expired credentials",
    403: "The credentials lack the scope or role, or a cross-site request",
    404: "No such object, or not yours",
    409: "The object is not in a state that allows this",
    413: "Request body too large",
    422: "A feature the sandbox's template does not enable",
    429: "Rate limit or quota exceeded (see Retry-After)",
    503: "The host is unavailable or has no capacity (transient)",
    507: "No space left in the sandbox",
}


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case error code; the SDK maps it to an exception class")
    message: str
    details: dict[str, Any] = Field(default_factory=dict, description="fieldErrors, requiredScope, …")


class Error(BaseModel):
    """Every error the API sends: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorDetail


class LoginForm(BaseModel):
    """POST /auth/login: a JSON object or an HTML form with these fields."""

    email: str = Field(min_length=1)
    password: str = Field(min_length=1)


class RequestBody(dict[str, Any]):
    """``openapi_extra`` declaring a body; it remembers its models for the components."""

    def __init__(self, content: dict[str, Any], *, required: bool, models: Iterable[type[BaseModel]] = ()) -> None:
        super().__init__(requestBody={"required": required, "content": content})
        self.models = tuple(models)


def request_body(model: type[BaseModel], *, required: bool = True,
                 media_types: Iterable[str] = ("application/json",)) -> RequestBody:
    """The body a route parses with ``json_body(request, model)``."""
    schema = {"$ref": REF + model.__name__}
    return RequestBody({media: {"schema": schema} for media in media_types}, required=required, models=[model])


def raw_body(media_type: str = "application/octet-stream") -> RequestBody:
    """A body taken as bytes, as it comes."""
    return RequestBody({media_type: {"schema": {"type": "string", "format": "binary"}}}, required=False)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for errors a route sends beyond those derived from its kind."""
    return {status: {"model": Error, "description": STATUS_TEXT.get(status, "Error")} for status in statuses}


def answers(status: int, model: Any, *error_statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=``: the JSON a route answers on success (see response_models), and its own errors."""
    return {status: {"model": model}, **errors(*error_statuses)}


def media(status: int, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a success answered in these media types (streams, bytes, text; JSON too if named)."""
    return {status: {"content": {m: {"schema": {"type": "object" if m == "application/json" else "string"}}
                                 for m in media_types}}}


def _returns(call: Any) -> Any:
    try:
        return typing.get_type_hints(call).get("return")
    except (NameError, TypeError):
        return None


def _auth(route: Any) -> set[str]:
    """The security schemes a route's dependencies accept (none: public)."""
    schemes: set[str] = set()
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        returned = _returns(dependant.call) if dependant.call else None
        if returned is Principal:
            schemes.add(BEARER)
        elif returned is SessionPrincipal:
            schemes.add(COOKIE)
        elif returned is HostCredential:
            schemes.add(HOST)
    return schemes


def derived_statuses(path: str, *, authenticated: bool, has_body: bool) -> set[int]:
    """The error statuses any route of this kind can answer."""
    # The input edge (http/body.py) refuses an over-long URL or a malformed query on any route.
    statuses = {400}
    if authenticated:
        statuses |= {401, 403, 429}
    if "{" in path:
        statuses.add(404)
    if has_body:
        statuses.add(413)
    if path.startswith(DATA_PLANE_PREFIX):
        statuses |= {400, 404, 409, 422, 503, 507}
    return statuses


def _error_response(status: int) -> dict[str, Any]:
    return {"description": STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": REF + ERROR_SCHEMA}}}}


def _api_routes(app: FastAPI) -> Iterator[tuple[Any, str, str]]:
    """(route, path, method) of every documented HTTP route.

    FastAPI 0.12x lists APIRoutes in ``app.routes``; later releases list included routers, whose
    routes are reached through ``iter_route_contexts`` (each context stands for its route).
    """
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = contexts(app.routes) if contexts else app.routes
    for route in routes:
        if isinstance(getattr(route, "original_route", route), APIRoute) and route.include_in_schema:
            for method in sorted(route.methods or ()):
                yield route, route.path_format, method.lower()


def _add_models(components: dict[str, Any], models: set[type[BaseModel]],
                mode: Literal["validation", "serialization"]) -> None:
    """Models as FastAPI would name them: request bodies validated, responses serialised."""
    _, defs = models_json_schema([(m, mode) for m in sorted(models, key=lambda m: m.__name__)],
                                 ref_template=REF + "{model}")
    for name, schema in defs.get("$defs", {}).items():
        existing = components.setdefault(name, schema)
        if existing != schema:
            raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _drop_fastapi_422(operation: dict[str, Any]) -> None:
    response = operation.get("responses", {}).get("422", {})
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("$ref") == REF + "HTTPValidationError":
        del operation["responses"]["422"]


def _only_ref(schema: dict[str, Any]) -> dict[str, Any]:
    """A declared model, without what FastAPI derived from a ``-> dict[str, Any]`` annotation beside it."""
    if "$ref" in schema:
        return {"$ref": schema["$ref"]}
    if isinstance(schema.get("items"), dict) and "$ref" in schema["items"]:
        return {"type": "array", "items": {"$ref": schema["items"]["$ref"]}}
    return schema


def _drop_json_placeholders(operation: dict[str, Any]) -> None:
    """FastAPI documents a route returning a Response as JSON ``{}``; not when it declared its media."""
    for response in operation.get("responses", {}).values():
        content = response.get("content", {})
        if len(content) > 1 and content.get("application/json", {}).get("schema") == {}:
            del content["application/json"]
        if "schema" in content.get("application/json", {}):
            content["application/json"]["schema"] = _only_ref(content["application/json"]["schema"])


def _shell_operation() -> dict[str, Any]:
    dims = {"type": "integer", "minimum": 1, "maximum": shell_protocol.MAX_DIMENSION}
    params = [
        {"name": "sandbox_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "cols", "in": "query", "schema": {**dims, "default": shell_protocol.DEFAULT_SIZE.cols}},
        {"name": "rows", "in": "query", "schema": {**dims, "default": shell_protocol.DEFAULT_SIZE.rows}},
        {"name": "command", "in": "query", "description": "run this command line instead of a login shell",
         "schema": {"type": "string", "minLength": 1, "maxLength": shell_protocol.MAX_COMMAND_CHARS}},
        {"name": "user", "in": "query", "description": "the account to run as (default: the template's)",
         "schema": {"type": "string", "maxLength": shell_protocol.MAX_USER_CHARS}},
    ]
    responses = {"101": {"description": "Switching Protocols: the terminal is open"}}
    responses.update({str(s): _error_response(s) for s in (400, 401, 403, 404, 409, 422, 429, 503)})
    return {
        "summary": "Interactive shell (WebSocket)",
        "operationId": "shell_v1_sandboxes__sandbox_id__shell_get",
        "description": "A WebSocket upgrade (ws:// or wss://). Every refusal is an HTTP answer before "
                       "the upgrade, with the error envelope. See WIRE_PROTOCOL §6 and docs/api.md.",
        "parameters": params,
        "security": [{BEARER: []}, {COOKIE: []}],
        "responses": responses,
        "x-websocket": {
            "clientFrames": {
                "input": {"type": "text", "example": {"type": "input", "data": "ls\r"},
                          "description": "keystrokes, as a JSON text frame; a binary frame is raw input"},
                "resize": {"type": "text", "example": {"type": "resize", "cols": 120, "rows": 40},
                           "description": f"cols and rows are integers from 1 to {shell_protocol.MAX_DIMENSION}"},
            },
            "serverFrames": "binary frames of raw terminal output; no control messages",
            "closeCodes": {
                "1000": "the shell exited (reason: 'exit N')",
                "1007": "a malformed text frame",
                "1008": "too many shells open for this API key, or the credentials were revoked",
                "1009": "a frame over the message size limit",
                "1011": "the connection to the host agent was lost",
            },
            "cookie": "the dashboard's session cookie is accepted from this server's own origin only",
        },
    }


def _add_links(paths: dict[str, Any]) -> None:
    """Links from each creating POST to the operations on what it created (schemathesis' stateful runs).

    ``POST /a/{x}/b`` answering 201 leads to every operation on ``/a/{x}/b/{y}/…``: ``x`` from the
    request, ``y`` from the answer's ``id`` (``{pid}`` from its ``pid``).
    """
    for path, operations in paths.items():
        created = operations.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        known = {p: f"$request.path.{p}" for p in re.findall(r"{(\w+)}", path)}
        for other, other_operations in paths.items():
            found = re.match(re.escape(path) + r"/{(\w+)}", other)
            if found is None:
                continue
            param = found.group(1)
            field = "id" if param.endswith("_id") else param
            for operation in other_operations.values():
                if "x-websocket" not in operation:
                    created.setdefault("links", {})[operation["operationId"]] = {
                        "operationId": operation["operationId"],
                        "parameters": {**known, param: f"$response.body#/{field}"},
                    }


def document(app: FastAPI) -> dict[str, Any]:
    """The complete OpenAPI document of ``app``."""
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes,
                       description="The qbox control-plane API. Errors are always "
                                   "{\"error\": {\"code\", \"message\", \"details\"}}.")
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: set[type[BaseModel]] = set()
    for route, path, method in _api_routes(app):
        operation = spec["paths"][path][method]
        extra = route.openapi_extra
        has_body = isinstance(extra, RequestBody)
        if isinstance(extra, RequestBody):
            models.update(extra.models)
        schemes = _auth(route)
        if schemes:
            operation["security"] = [{scheme: []} for scheme in sorted(schemes)]
        _drop_fastapi_422(operation)
        _drop_json_placeholders(operation)
        responses = operation.setdefault("responses", {})
        for status in sorted(derived_statuses(path, authenticated=bool(schemes), has_body=has_body)):
            responses.setdefault(str(status), _error_response(status))
    _add_models(schemas, models, "validation")
    _add_models(schemas, {Error}, "serialization")
    used = set(_refs(spec["paths"]))
    for fastapis in ("HTTPValidationError", "ValidationError"):
        if REF + fastapis not in used:
            schemas.pop(fastapis, None)
    components["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "An API key: Authorization: Bearer qbox_…"},
        HOST: {"type": "http", "scheme": "bearer",
               "description": "A joined host's credential, for agents only: Authorization: Bearer qbh_…"},
        COOKIE: {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                 "description": "The dashboard's session (POST /auth/login), from this server's own origin only; "
                                "state-changing requests also need X-CSRF-Token"},
    }
    spec["paths"].setdefault(SHELL_PATH, {})["get"] = _shell_operation()
    _add_links(spec["paths"])
    return spec


def render(app: FastAPI) -> str:
    """The document as checked in (docs/openapi.json)."""
    return json.dumps(document(app), indent=2, ensure_ascii=False) + "\n"


def install(app: FastAPI) -> None:
    """Serve ``document(app)`` at the app's openapi_url (built once, on the first request)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
