"""The OpenAPI document describes the API as it is: bodies, errors, security, the shell.

What each route does is read from the route itself (its source reads a body,
its dependencies authenticate), so a new route is checked without a list.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from qbox.server.app import create_app
from qbox.server.services.ratelimit import RateLimiter
from qbox.server.settings import ServerSettings

from tests.unit.server.conftest import Harness

CHECKED_IN = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
ERROR_REF = "#/components/schemas/Error"
# How a route's source reads its request body.
BODY_READERS = ("json_body(", "request.stream()", "request.body()", "_fields(request)")


def _routes(app: Any) -> list[tuple[str, str, Any]]:
    """(method, path, endpoint) of every HTTP route the app serves."""
    import fastapi.routing

    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    found = []
    for route in contexts(app.routes) if contexts else app.routes:
        if getattr(route, "include_in_schema", False) and getattr(route, "methods", None):
            found += [(m.lower(), route.path_format, route.endpoint) for m in route.methods]
    return found


def _reads_body(endpoint: Any) -> bool:
    source = inspect.getsource(endpoint)
    return any(reader in source for reader in BODY_READERS)


@pytest.fixture
def spec(harness: Harness) -> dict[str, Any]:
    return harness.client.get("/openapi.json").json()  # type: ignore[no-any-return]


def test_the_checked_in_document_is_current(tmp_path: Path) -> None:
    from qbox.server.http.openapi import render

    current = render(create_app(ServerSettings(data_dir=tmp_path, agent_secret="x")))
    assert json.loads(CHECKED_IN.read_text()) == json.loads(current), \
        "docs/openapi.json is out of date: run `make openapi`"


def test_every_route_that_reads_a_body_declares_it(harness: Harness, spec: dict[str, Any]) -> None:
    readers = [(m, p) for m, p, endpoint in _routes(harness.client.app) if _reads_body(endpoint)]
    assert len(readers) >= 15
    for method, path in readers:
        body = spec["paths"][path][method].get("requestBody")
        assert body and body["content"], f"{method.upper()} {path} reads a body the document does not describe"
        for media in body["content"].values():
            schema = media["schema"]
            if "$ref" in schema:
                name = schema["$ref"].rsplit("/", 1)[-1]
                assert name in spec["components"]["schemas"], (method, path, name)
    upload = spec["paths"]["/v1/sandboxes/{sandbox_id}/file"]["put"]["requestBody"]["content"]
    assert list(upload) == ["application/octet-stream"]


def test_every_authenticated_route_says_so(harness: Harness, spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {"type": "http", "scheme": "bearer",
                                    "description": schemes["bearerKey"]["description"]}
    assert schemes["sessionCookie"]["in"] == "cookie"
    # Ask the server, not the document, which routes need credentials.
    harness.client.app.state.services.limits.auth_failures = RateLimiter(0, 0)  # type: ignore[attr-defined]
    for method, path, _endpoint in _routes(harness.client.app):
        url = path.replace("{pid}", "1").replace("{", "").replace("}", "")
        answer = harness.client.request(method.upper(), url, json={})
        operation = spec["paths"][path][method]
        if answer.status_code == 401:
            assert operation.get("security"), f"{method.upper()} {path} needs credentials, undeclared"
        if operation.get("security"):
            assert {"401", "403", "429"} <= operation["responses"].keys(), (method, path)


def test_errors_are_documented_with_the_envelope_and_fastapis_422_is_gone(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message"} and "details" in error["properties"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= responses.keys(), (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": ERROR_REF}, (method, path, status)


def test_the_shell_websocket_is_described(spec: dict[str, Any]) -> None:
    shell = spec["paths"]["/v1/sandboxes/{sandbox_id}/shell"]["get"]
    assert set(shell["x-websocket"]["clientFrames"]) == {"input", "resize"}
    assert {p["name"] for p in shell["parameters"]} == {"sandbox_id", "cols", "rows", "command", "user"}
    assert shell["security"] == [{"bearerKey": []}, {"sessionCookie": []}]
    assert "101" in shell["responses"]


def test_a_405_allows_exactly_the_documented_methods(harness: Harness, spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        documented = {m.upper() for m, op in operations.items() if "x-websocket" not in op}
        if not documented:
            continue
        r = harness.client.request("TRACE", path.replace("{pid}", "1"), headers=harness.auth())
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", (path, r.text)
        assert set(r.headers["allow"].split(", ")) == documented, path
