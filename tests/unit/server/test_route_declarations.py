"""Every route declares who may call it and what its audit entry is, so a new route cannot forget.

Read from the app's routes themselves: each route that takes a key declares
its scope and the rate-limit buckets it draws from (``Access``), each route
that changes something declares its audit action (``Audited``). Then the
entries of the two writers outside HTTP routes, the shell WebSocket and the
reaper, are shown to go through the same ``AuditService.record``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.testclient import WebSocketDenialResponse

from qbox.server.app import create_app
from qbox.server.http.access import Access, Bucket
from qbox.server.http.auditing import Audited
from qbox.server.services.audit import AuditNote
from qbox.server.settings import ServerSettings
from tests.unit.server.conftest import Harness
from tests.unit.server.helpers import set_deadline
from tests.unit.server.test_audit import entries
from tests.unit.server.test_sandboxes_api import spawn

PUBLIC = {("GET", "/healthz"), ("GET", "/v1/system"), ("GET", "/v1/agent/ca")}
# Authenticated by the dashboard's session cookie (login: by a password in the body), not a key.
DASHBOARD = {("POST", "/auth/login"), ("GET", "/auth/session"), ("POST", "/auth/logout")}
ANY_KEY = {("GET", "/v1/auth/me")}
# Called by host agents: a join token in the body, then the host credential (no API key).
AGENT = {("POST", "/v1/agent/join"), ("POST", "/v1/agent/heartbeat"), ("POST", "/v1/agent/certificate")}
# A heartbeat changes only its host's figures; twelve entries a minute per host would drown the log.
UNAUDITED = {("POST", "/v1/agent/heartbeat")}
READS = {"GET", "HEAD", "OPTIONS"}


def _declared(dependant: Dependant) -> Iterator[Any]:
    """What the route's dependencies are bound to (an ``Access``, an ``Audited``), depth first."""
    for dependency in dependant.dependencies:
        if (owner := getattr(dependency.call, "__self__", None)) is not None:
            yield owner
        yield from _declared(dependency)


def is_api(path: str) -> bool:
    """The API's routes; the rest are the dashboard's pages (tests/unit/web/test_page_declarations.py)."""
    return path.startswith(("/v1/", "/auth/")) or path == "/healthz"


def _routes(tmp_path: Path, *, api: bool = True) -> list[tuple[str, str, list[Any]]]:
    """(method, path, declarations) of every route of the API (or, ``api=False``, of the
    dashboard) the app serves; a WebSocket's method is WEBSOCKET."""
    app = create_app(ServerSettings(data_dir=tmp_path, agent_secret="x"))
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    found = []
    for context in contexts(app.routes) if contexts else app.routes:
        route = getattr(context, "route", context)
        if is_api(context.path_format) != api:
            continue
        if isinstance(route, APIWebSocketRoute):
            found.append(("WEBSOCKET", context.path_format, list(_declared(route.dependant))))
        elif isinstance(route, APIRoute):
            declared = list(_declared(route.dependant))
            found += [(method, context.path_format, declared) for method in sorted(route.methods)]
    return found


def _one(declared: list[Any], kind: type[Any], route: tuple[str, str]) -> Any:
    matching = [d for d in declared if isinstance(d, kind)]
    assert len(matching) == 1, f"{route}: declares {len(matching)} {kind.__name__}"
    return matching[0]


def test_every_keyed_route_declares_its_scope_and_buckets(tmp_path: Path) -> None:
    routes = _routes(tmp_path)
    assert len(routes) >= 40
    for method, path, declared in routes:
        route = (method, path)
        if route in PUBLIC | DASHBOARD | AGENT:
            assert not any(isinstance(d, Access) for d in declared), route
            continue
        access = _one(declared, Access, route)
        # Every key draws from its requests bucket; spawns draw from their own as well, after it.
        assert access.buckets[0] is Bucket.REQUESTS, route
        assert len(set(access.buckets)) == len(access.buckets), route
        assert (access.scope is None) == (route in ANY_KEY), route
        assert access.cookie == (method == "WEBSOCKET"), route
    spawns = [(m, p) for m, p, declared in routes
              if any(isinstance(d, Access) and Bucket.SPAWNS in d.buckets for d in declared)]
    assert spawns == [("POST", "/v1/sandboxes")]


def test_every_route_that_changes_something_declares_its_audit_action(tmp_path: Path) -> None:
    actions = {}
    for method, path, declared in _routes(tmp_path):
        audited = [d for d in declared if isinstance(d, Audited)]
        audited += [d.audit for d in declared if isinstance(d, Access) and d.audit is not None]
        if method in READS or (method, path) in UNAUDITED:
            assert not audited, f"{method} {path} reads; it audits nothing"
            continue
        assert len(audited) == 1, f"{method} {path} changes something: declare its audit action"
        actions[(method, path)] = audited[0].action
    assert len(actions) >= 28
    # One action, one route: an entry says which route wrote it.
    assert len(set(actions.values())) == len(actions)
    assert actions[("WEBSOCKET", "/v1/sandboxes/{sandbox_id}/shell")] == "sandbox.shell"
    assert actions[("POST", "/auth/logout")] == "auth.logout"
    assert actions[("POST", "/v1/agent/join")] == "host.join"


@pytest.fixture
def recorded(harness: Harness) -> Iterator[list[tuple[str, int]]]:
    """The (action, outcome) of every note finished through ``AuditService.record``."""
    audit = harness.client.app.state.services.audit  # type: ignore[attr-defined]
    through = audit.record
    seen: list[tuple[str, int]] = []

    async def record(note: AuditNote, outcome: int, **kw: Any) -> int | None:
        seen.append((note.action, outcome))
        return await through(note, outcome, **kw)  # type: ignore[no-any-return]

    audit.record = record
    try:
        yield seen
    finally:
        del audit.record


def test_the_shell_writes_its_entries_through_the_one_record_path(
        harness: Harness, recorded: list[tuple[str, int]]) -> None:
    sb = spawn(harness)["id"]
    recorded.clear()
    with harness.client.websocket_connect(f"/v1/sandboxes/{sb}/shell?cols=90&rows=20", headers=harness.auth()):
        pass
    with pytest.raises(WebSocketDenialResponse) as caught, harness.client.websocket_connect(
            f"/v1/sandboxes/{sb}/shell", headers={"Authorization": "Bearer qbox_forged"}):
        pass
    assert caught.value.status_code == 401
    assert recorded == [("sandbox.shell", 101), ("sandbox.shell", 401)]
    log = entries(harness, action="sandbox.shell")
    assert [(e["outcome"], e["targetId"], e["detail"]) for e in log] == [
        (401, sb, f"GET /v1/sandboxes/{sb}/shell"), (101, sb, "90x20 user=user")]
    assert log[1]["actorEmail"] == "admin@localhost" and log[0]["actorId"] is None


def test_the_reaper_writes_its_entry_through_the_one_record_path(
        harness: Harness, recorded: list[tuple[str, int]]) -> None:
    sb = spawn(harness)["id"]
    set_deadline(harness.settings.data_dir, sb, datetime.now(UTC) - timedelta(seconds=1))
    recorded.clear()
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    assert harness.client.portal.call(services.reaper.sweep) == [sb]  # type: ignore[union-attr]
    assert recorded == [("sandbox.expire", 200)]
    [expired] = entries(harness, action="sandbox.expire")
    assert (expired["targetId"], expired["outcome"], expired["detail"]) == (sb, 200, "auto-kill deadline passed")
    assert expired["actorId"] is None
    # Written once, with the sandbox's end: finishing the note added no second entry.
    assert len(entries(harness, targetId=sb)) == 2  # its creation and its expiry
