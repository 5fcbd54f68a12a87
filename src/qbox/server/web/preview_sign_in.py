"""``/preview-auth``: the dashboard's half of a private preview's sign-in (http/preview_auth.py
has the proxy's half). A signed-in user who may open the port gets a one-time token on the
preview host, which the proxy exchanges for the preview's own cookie."""

from __future__ import annotations

import html
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from qbox.core.errors import ValidationError
from qbox.server.http.preview_auth import AUTH_PATH, TOKEN_PARAM, not_exposed, refusal
from qbox.server.services.preview import PreviewDomain
from qbox.server.services.preview_grants import PreviewGrants
from qbox.server.services.registry import Services
from qbox.server.web.access import Page, Viewer

router = APIRouter(include_in_schema=False)


@router.get(AUTH_PATH)
async def preview_sign_in(request: Request, viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    """The dashboard's half of a private preview's sign-in: the signed-in user gets a one-time
    token on the preview host, if they may open it (Page sends a browser without a session to
    the sign-in form first, and back here with its query)."""
    services: Services = request.app.state.services
    domain = PreviewDomain.from_settings(services.ctx.settings)
    to = request.query_params.get("to", "")
    parts = urlsplit(to)
    named = domain.parse(parts.netloc) if parts.scheme in ("http", "https") else None
    if named is None or parts.username or parts.password:
        return refusal(ValidationError.for_fields({"to": "not a preview URL of this server"},
                                                  "not a preview URL of this server"), True)
    sandbox_id, port = named
    route = await services.ports.route(sandbox_id, port)
    if route is None or not await services.ports.can_open_private(route, viewer.principal):
        return refusal(not_exposed(sandbox_id, port), True)
    token = await PreviewGrants(services.ctx).mint_token(viewer.principal.user_id, sandbox_id, port)
    query = "&".join(part for part in (parts.query, urlencode({TOKEN_PARAM: token})) if part)
    return _onward(urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, "")))


def _onward(url: str) -> Response:
    """A page that goes on to ``url`` by itself, not a redirect: after the sign-in form's POST a
    redirect chain to another origin is stopped by the dashboard's CSP (``form-action 'self'``),
    while a page's own refresh is a navigation of its own."""
    link = html.escape(url, quote=True)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta http-equiv=refresh content='0;url={link}'><title>Opening the preview · qbox</title>"
            f"</head><body><p><a href='{link}'>Continue to the preview</a></p></body></html>")
    return Response(page, media_type="text/html", headers={"Cache-Control": "no-store"})
