"""Generated from the OpenAPI spec, so a new route cannot be forgotten:
every `{id}` route hides other users' objects (BOLA), and every route checks a scope."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from starlette.testclient import WebSocketDenialResponse

from qbox.server.services.ratelimit import RateLimiter

from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import add_user_with_key
from tests.unit.server.test_sandboxes_api import spawn

HOST_REPORT = {"version": "t", "runtime": "crun", "runtimes": ["crun"], "sandboxes": 0,
               "address": "http://10.9.0.2:7001"}
# A valid body for every route that takes one: validation must not answer before access control.
BODIES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("POST", "/v1/sandboxes"): {"templateId": "tpl_python"},
    ("POST", "/v1/sandboxes/{sandbox_id}/timeout"): {"timeoutSeconds": 60},
    ("POST", "/v1/sandboxes/{sandbox_id}/exec"): {"cmd": "true"},
    ("POST", "/v1/sandboxes/{sandbox_id}/commands"): {"cmd": "true"},
    ("POST", "/v1/sandboxes/{sandbox_id}/commands/{pid}/stdin"): {"data": "x"},
    ("PUT", "/v1/sandboxes/{sandbox_id}/file"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/code-execute"): {"code": "1+1"},
    ("POST", "/v1/sandboxes/{sandbox_id}/code-contexts"): {"language": "python"},
    ("POST", "/v1/sandboxes/{sandbox_id}/code-contexts/{context_id}/restart"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/files/mkdir"): {"path": "/tmp/d", "mode": 493, "parents": True},
    ("POST", "/v1/sandboxes/{sandbox_id}/files/rename"): {"src": "/tmp/a", "dst": "/tmp/b"},
    ("PATCH", "/v1/sandboxes/{sandbox_id}/envs"): {"envs": {"A": "1"}},
    ("PUT", "/v1/sandboxes/{sandbox_id}/envs"): {"envs": {"A": "1"}},
    ("DELETE", "/v1/sandboxes/{sandbox_id}/envs"): {"keys": ["A"]},
    ("POST", "/v1/sandboxes/{sandbox_id}/envs/upload"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/ports"): {"port": 8001},
    ("PATCH", "/v1/sandboxes/{sandbox_id}/ports/{port}"): {"visibility": "public"},
    ("POST", "/v1/sandboxes/{sandbox_id}/ports/{port}/signed-url"): {},
    ("POST", "/v1/sandboxes/{sandbox_id}/ports/{port}/probe"): None,
    ("POST", "/v1/api-keys"): {"name": "x", "scopes": ["sandboxes:read"]},
    ("POST", "/v1/api-keys/{key_id}/revoke"): None,
    ("POST", "/v1/users"): {"email": "new@example.com"},
    ("POST", "/v1/users/{user_id}/disable"): None,
    ("PUT", "/v1/users/{user_id}/password"): {"password": "a long enough password"},
    ("POST", "/v1/templates"): {"name": "scoped", "imageRef": "busybox:1"},
    ("POST", "/v1/build-contexts"): None,
    ("POST", "/v1/templates/{template_id}/rebuild"): None,
    # Refused before any network (a private address), should it ever get past access control.
    ("POST", "/v1/templates/from-git"): {"name": "scoped-git", "url": "https://127.0.0.1/r.git"},
    ("PATCH", "/v1/templates/{template_id}"): {"public": True},
    ("PUT", "/v1/users/{user_id}/quota"): {"sandboxes": 3},
    ("PUT", "/v1/quota-defaults"): {"sandboxes": 20},
    ("POST", "/v1/hosts/{host_id}/drain"): None,
    ("POST", "/v1/hosts/{host_id}/uncordon"): None,
    ("POST", "/v1/host-tokens"): {"ttlSeconds": 600},
    ("POST", "/v1/agent/join"): {"token": "qbj_forged", "report": HOST_REPORT},
    ("POST", "/v1/agent/heartbeat"): HOST_REPORT,
    ("POST", "/v1/agent/certificate"): {"csrPem": "-----BEGIN CERTIFICATE REQUEST-----"},
}
PUBLIC = {("GET", "/healthz"), ("GET", "/v1/system"), ("GET", "/v1/agent/ca")}
# Called by agents, with a join token or their host credential instead of a key.
AGENT = {("POST", "/v1/agent/join"), ("POST", "/v1/agent/heartbeat"), ("POST", "/v1/agent/certificate")}
ANY_KEY = {("GET", "/v1/auth/me")}
# Owned objects: another member must get 404, as if it did not exist.
OWNED_PARAMS = {"sandbox_id", "key_id", "pid", "context_id", "template_id", "port"}
# Operators' objects: a member is refused (403) before any lookup, whatever the method.
ADMIN_PARAMS = {"host_id", "token_id"}
# Objects shared by every user: none. (Users are admin-only routes answering 403 before any lookup.)
SHARED_PARAMS: set[str] = set()
ADMIN_ONLY_PREFIXES = ("/v1/users", "/v1/audit", "/v1/quota-defaults", "/v1/hosts", "/v1/host-tokens",
                       "/v1/cluster")


def api_routes(h: Harness) -> list[tuple[str, str]]:
    spec = h.client.get("/openapi.json").json()
    return sorted((method.upper(), path) for path, ops in spec["paths"].items() for method in ops
                  if path.startswith("/v1/"))


def call(h: Harness, method: str, path: str, url: str, headers: dict[str, str]) -> httpx.Response:
    """The route's answer; a WebSocket route's (``x-websocket``) refusal before the upgrade."""
    operation = h.client.get("/openapi.json").json()["paths"][path][method.lower()]
    if not operation.get("x-websocket"):
        return h.client.request(method, url, json=BODIES.get((method, path)), headers=headers)
    with pytest.raises(WebSocketDenialResponse) as caught, h.client.websocket_connect(url, headers=headers):
        pass
    return caught.value  # type: ignore[return-value]


def test_every_route_with_a_body_has_an_entry_here(harness: Harness) -> None:
    spec = harness.client.get("/openapi.json").json()
    unsafe = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops
              if p.startswith("/v1/") and m.upper() in ("POST", "PUT", "PATCH")}
    assert unsafe - BODIES.keys() == set(), "add a valid body for the new route to BODIES"


@pytest.fixture
def alices_objects(harness: Harness) -> dict[str, str]:
    data_dir = harness.settings.data_dir
    alice_id, alice = add_user_with_key(data_dir)
    sb = spawn(harness, {"ports": [{"port": 8000}]}, key=alice)
    pid = harness.client.post(f"/v1/sandboxes/{sb['id']}/commands", json={"cmd": "true"},
                              headers=harness.auth(alice)).json()["pid"]
    key_id = harness.client.get("/v1/api-keys", headers=harness.auth(alice)).json()[0]["id"]
    # Alice's private template (built, so that no route answers "still building" first).
    r = harness.client.post("/v1/templates", json={"name": "alices", "imageRef": "busybox:1"},
                            headers=harness.auth(alice))
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 10
    while harness.client.get("/v1/templates/tpl_alices", headers=harness.auth(alice)).json()["status"] \
            == "building":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # A joined host and a join token, the operators' objects.
    token = harness.client.post("/v1/host-tokens", json={}, headers=harness.auth()).json()
    joined = harness.client.post("/v1/agent/join", json={"token": token["token"], "report": HOST_REPORT})
    spare = harness.client.post("/v1/host-tokens", json={}, headers=harness.auth()).json()
    return {"sandbox_id": sb["id"], "pid": str(pid), "key_id": key_id, "user_id": alice_id,
            "context_id": "ctx_alice", "template_id": "tpl_alices", "alice": alice, "port": "8000",
            "host_id": joined.json()["hostId"], "token_id": spare["id"]}


def test_no_route_reveals_another_members_objects(harness: Harness, alices_objects: dict[str, str]) -> None:
    _bob_id, bob = add_user_with_key(harness.settings.data_dir)
    checked = 0
    attacked: set[str] = set()
    for method, path in api_routes(harness):
        params = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        if not params:
            continue
        unknown = params - OWNED_PARAMS - SHARED_PARAMS - ADMIN_PARAMS - {"user_id"}
        assert not unknown, f"{method} {path}: decide how {unknown} is owned"
        if params <= SHARED_PARAMS:
            continue
        url = path.format(**alices_objects)
        r = call(harness, method, path, url, harness.auth(bob))
        if path.startswith(ADMIN_ONLY_PREFIXES) and (method != "GET" or params & ADMIN_PARAMS):
            assert r.status_code == 403, (method, path, r.text)
        else:
            assert r.status_code == 404, (method, path, r.status_code, r.text)
        checked += 1
        attacked.add(path)
    assert checked >= 20
    assert {p for p in attacked if p.startswith("/v1/templates/")} == {
        "/v1/templates/{template_id}", "/v1/templates/{template_id}/build-log",
        "/v1/templates/{template_id}/rebuild"}
    # Alice's sandbox and template are untouched by all that.
    alice = harness.auth(alices_objects["alice"])
    r = harness.client.get(f"/v1/sandboxes/{alices_objects['sandbox_id']}", headers=alice)
    assert r.json()["status"] == "running"
    r = harness.client.get(f"/v1/templates/{alices_objects['template_id']}", headers=alice)
    assert r.json()["status"] == "ready" and r.json()["public"] is False
    assert len(harness.agent.builds) == 1


def test_every_route_checks_a_scope(harness: Harness, alices_objects: dict[str, str]) -> None:
    data_dir = harness.settings.data_dir
    _t, templates_only = add_user_with_key(data_dir, role="admin", scopes=["templates:read"])
    _s, sandboxes_only = add_user_with_key(data_dir, role="admin", scopes=["sandboxes:read"])
    for method, path in api_routes(harness):
        if (method, path) in PUBLIC | ANY_KEY | AGENT:
            continue
        key = sandboxes_only if path.startswith("/v1/templates") else templates_only
        url = path.format(**alices_objects)
        r = call(harness, method, path, url, harness.auth(key))
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json()["error"]["details"]["requiredScope"], (method, path)


def test_every_route_needs_a_key(harness: Harness, alices_objects: dict[str, str]) -> None:
    # Many failures from one address in a row; their limit is tested elsewhere.
    harness.client.app.state.services.limits.auth_failures = RateLimiter(0, 0)  # type: ignore[attr-defined]
    for method, path in api_routes(harness):
        if (method, path) in PUBLIC:
            continue
        r = call(harness, method, path, path.format(**alices_objects), {})
        assert r.status_code == 401, (method, path)
        if (method, path) in AGENT:
            assert r.json()["error"]["code"] in ("invalid_join_token", "invalid_host_credential")


def test_admin_only_routes_refuse_members(harness: Harness, alices_objects: dict[str, str]) -> None:
    _m, member = add_user_with_key(harness.settings.data_dir)
    removal = ("DELETE", "/v1/hosts/{host_id}")
    for method, path in [*(r for r in api_routes(harness) if r != removal), removal]:  # removal last
        if not path.startswith(ADMIN_ONLY_PREFIXES) or "{user_id}" in path and method == "GET":
            continue
        r = harness.client.request(method, path.format(**alices_objects), json=BODIES.get((method, path)),
                                   headers=harness.auth(member))
        assert r.status_code == 403, (method, path)
        r = harness.client.request(method, path.format(**alices_objects), json=BODIES.get((method, path)),
                                   headers=harness.auth())
        assert r.status_code < 400, (method, path, r.text)
