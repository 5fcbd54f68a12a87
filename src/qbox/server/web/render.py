"""Rendering pages: one Jinja2 environment, autoescaped, with what every page shows.

Every page extends ``base.html`` (navigation, the status line with the
signed-in user, the control plane's version and logout; the CSRF token in a
meta tag for htmx). A fragment (an htmx swap) is a template that extends
nothing. Times are rendered as ``<time datetime=…>`` in UTC; ``app.js`` shows
them in the browser's own zone and counts deadlines down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from qbox import __version__
from qbox.server.web.access import Viewer
from qbox.server.web.assets import ASSETS

TEMPLATES = Path(__file__).parent / "templates"
# Pages never cache: they show live state and carry the session's CSRF token.
NO_STORE = {"Cache-Control": "no-store"}


def _iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short_time(value: datetime | str | None) -> str:
    """What a ``<time>`` shows before app.js localises it (and with scripts off)."""
    text = _iso(value)
    return text.replace("T", " ").removesuffix("Z") + " UTC" if text else "—"


def _bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals.update(asset=ASSETS.url, version=__version__)
environment.filters.update(iso=_iso, short_time=_short_time, size=_bytes)


def render(request: Request, template: str, viewer: Viewer | None, *, status: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """A page or fragment, rendered for ``viewer`` (None on the login and error pages)."""
    body = environment.get_template(template).render(
        request=request, viewer=viewer, path=request.url.path, **context)
    return HTMLResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def is_htmx(request: Request) -> bool:
    """An htmx request (it swaps a fragment) rather than a browser navigation."""
    return request.headers.get("hx-request") == "true"
