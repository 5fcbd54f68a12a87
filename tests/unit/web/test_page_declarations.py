"""Every dashboard route declares its reader or its change, so a new page cannot forget.

A page (GET) depends on ``Page`` (the session, a scope, admin-only or not);
every other method on ``Change`` (our origin, the CSRF token, a scope) with
the API's audit action for the same change, so the audit log reads alike
whichever way a change came. The front door (login, assets) is the exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from qbox.server.app import create_app
from qbox.server.settings import ServerSettings
from qbox.server.web.access import Change, Page
from tests.unit.server.test_route_declarations import _routes, is_api

OPEN = {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("GET", "/assets/{digest}/{name}")}


def test_every_page_declares_its_reader_and_every_change_its_checks(tmp_path: Path) -> None:
    api_actions = set()
    for _method, _path, declared in _routes(tmp_path):
        api_actions |= {d.action for d in declared if hasattr(d, "action")}
        api_actions |= {d.audit.action for d in declared if getattr(d, "audit", None) is not None}
    pages = _page_routes(tmp_path)
    assert len(pages) >= len(OPEN) + 1
    for method, path, declared in pages:
        route = (method, path)
        if route in OPEN:
            assert not any(isinstance(d, Page | Change) for d in declared), route
            continue
        if method in ("GET", "HEAD"):
            assert [type(d) for d in declared if isinstance(d, Page | Change)] == [Page], route
            continue
        changes = [d for d in declared if isinstance(d, Change)]
        assert len(changes) == 1, f"{route}: declare one Change"
        action = changes[0].audit if isinstance(changes[0].audit, str) else getattr(changes[0].audit, "action", None)
        assert action in api_actions, f"{route}: audits {action!r}, which no API route does"


def _declared(dependant: Dependant) -> Iterator[Any]:
    """The dependencies' callables (a ``Page`` or ``Change`` is its own), depth first."""
    for dependency in dependant.dependencies:
        yield getattr(dependency.call, "__self__", dependency.call)
        yield from _declared(dependency)


def _page_routes(tmp_path: Path) -> list[tuple[str, str, list[Any]]]:
    app = create_app(ServerSettings(data_dir=tmp_path, agent_secret="x"))
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    found = []
    for context in contexts(app.routes) if contexts else app.routes:
        route = getattr(context, "route", context)
        if isinstance(route, APIRoute) and not is_api(context.path_format):
            found += [(m, context.path_format, list(_declared(route.dependant))) for m in sorted(route.methods)]
    return found
