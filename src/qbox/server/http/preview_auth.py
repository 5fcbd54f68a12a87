"""Who may open a preview: each port's visibility, decided before anything is relayed.

- ``public``: anyone.
- ``private``: the sandbox's owner, an admin or a user in ``allowedUsers``, by an API key
  (``Authorization: Bearer qbox_…``; a wrong one is a 401) or by the preview cookie. A
  browser without one is sent to ``/preview-auth`` on the control plane's own origin, which
  asks for the dashboard's sign-in if needed and sends it back with a one-time token; the
  proxy redeems the token for an HttpOnly cookie of that preview host only
  (services/preview_grants.py). Every request asks again whether the user may open the port.
- ``signed_url``: ``?qbox_signature=`` valid for the port's current key, then a cookie of the
  host carrying the signature so the page's own assets load; minting a new URL rotates the
  key and ends every older one, cookies included.

Someone who may not open a port hears what they would hear if it were not exposed (404),
so a preview host says nothing about a sandbox to whoever cannot see it.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from fastapi.responses import JSONResponse, Response

from qbox.core.errors import AuthenticationError, NotFoundError, PermissionDeniedError, QboxError
from qbox.server.http.access import rate_limited
from qbox.server.services.keys import SECRET_PREFIX, principal_for_secret
from qbox.server.services.preview import SIGNATURE_PARAM, PreviewDomain, PreviewRoute, signature_valid
from qbox.server.services.preview_grants import COOKIE_LIFETIME, Grant, PreviewGrants
from qbox.server.services.registry import Services
from qbox.server.services.web_sessions import CSRF_COOKIE, SESSION_COOKIE

PREVIEW_COOKIE = "qbox_preview"
SIGNED_COOKIE = "qbox_preview_sig"
TOKEN_PARAM = "qbox_preview_token"
AUTH_PATH = "/preview-auth"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# Never sent on to a sandbox.
OUR_COOKIES = frozenset({SESSION_COOKIE, CSRF_COOKIE, PREVIEW_COOKIE, SIGNED_COOKIE})
OUR_PARAMS = frozenset({SIGNATURE_PARAM, TOKEN_PARAM})



@dataclass(frozen=True)
class Incoming:
    """One request to a preview host, as the proxy read it from the ASGI scope."""

    host: str
    sandbox_id: str
    port: int
    method: str
    scheme: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    client_ip: str
    websocket: bool = False

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key == name), "")

    @property
    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for key, value in self.headers:
            if key == "cookie":
                for part in value.split(";"):
                    name, _, found = part.strip().partition("=")
                    jar.setdefault(name, found)
        return jar

    def param(self, name: str) -> str | None:
        return next((v for k, v in parse_qsl(self.query, keep_blank_values=True) if k == name), None)

    @property
    def wants_html(self) -> bool:
        return "text/html" in self.header("accept")

    @property
    def bearer(self) -> str | None:
        """A qbox API key in ``Authorization`` (another bearer token is the sandbox's business)."""
        scheme, _, token = self.header("authorization").partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token.startswith(SECRET_PREFIX) else None

    def target(self, drop: frozenset[str] = OUR_PARAMS) -> str:
        """The origin-form target without our own query parameters, the rest as it came."""
        kept = [part for part in self.query.split("&")
                if part and unquote(part.partition("=")[0].replace("+", " ")) not in drop]
        return self.raw_path + ("?" + "&".join(kept) if kept else "")

    def url(self, drop: frozenset[str] = OUR_PARAMS) -> str:
        return f"{self.scheme}://{self.host}{self.target(drop)}"

    def check_cookie_origin(self) -> None:
        """A cookie lets in a WebSocket or a change only from the preview's own pages. Every
        preview is same-site with every other (one domain), so browsers send SameSite=Lax
        cookies on a sibling preview's requests too; a WebSocket has no CORS to stop it."""
        origin = self.header("origin")
        if (self.websocket or self.method not in _SAFE) and origin \
                and urlsplit(origin).netloc.lower() != self.host.lower():
            raise PermissionDeniedError("the preview's cookie counts only on requests from its own pages",
                                        details={"reason": "origin"})


@dataclass(frozen=True)
class Admit:
    """Relay the request; add these Set-Cookie values to the answer."""

    cookies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirect:
    location: str
    cookies: tuple[str, ...] = field(default=())


def not_exposed(sandbox_id: str, port: int) -> NotFoundError:
    return NotFoundError(f"port {port} of {sandbox_id} is not exposed",
                         details={"sandboxId": sandbox_id, "port": port})


def set_cookie(name: str, value: str, max_age: int, secure: bool) -> str:
    """A host-only cookie (no Domain): it goes back to this preview host and no other."""
    return (f"{name}={value}; Max-Age={max(0, max_age)}; Path=/; HttpOnly; SameSite=Lax"
            + ("; Secure" if secure else ""))


def control_plane_origin(services: Services, domain: PreviewDomain, incoming: Incoming) -> str:
    """Where the dashboard answers: QBOX_PUBLIC_URL, else the preview domain itself on the
    port the browser used (``qbox up``: ``http://localhost:8080``)."""
    public = services.ctx.settings.public_url
    if public:
        return public.rstrip("/")
    port = incoming.host.rsplit(":", 1)[1] if ":" in incoming.host else ""
    return f"{incoming.scheme}://{domain.domain}" + (f":{port}" if port else "")


class PreviewAuth:
    def __init__(self, services: Services, domain: PreviewDomain) -> None:
        self.services = services
        self.domain = domain
        self.grants = PreviewGrants(services.ctx)

    @property
    def _secure(self) -> bool:
        return self.services.ctx.settings.secure_cookies

    async def decide(self, incoming: Incoming, route: PreviewRoute) -> Admit | Redirect:
        """Admit, redirect, or raise the refusal (401, 403, or the 404 of an unexposed port)."""
        if route.visibility == "public":
            return Admit()
        if incoming.bearer is not None:
            async with self.services.ctx.sessions() as session:
                principal = await principal_for_secret(session, incoming.bearer)
            if principal is None:
                if wait := self.services.limits.auth_failures.check(incoming.client_ip):
                    raise rate_limited(wait, "failed authentications from this address")
                raise AuthenticationError("invalid, revoked or expired API key")
            if principal.may("sandboxes:read") and await self.services.ports.can_open_private(route, principal):
                return Admit()
            raise not_exposed(route.sandbox_id, route.port)
        if route.visibility == "signed_url":
            return self._signed(incoming, route)
        return await self._private(incoming, route)

    def _signed(self, incoming: Incoming, route: PreviewRoute) -> Admit:
        now = time.time()
        given = incoming.param(SIGNATURE_PARAM)
        if given is not None:
            if signature_valid(route.signing_key, route.sandbox_id, route.port, given, now):
                expires = int(given.partition(".")[0])
                return Admit((set_cookie(SIGNED_COOKIE, given, expires - int(now), self._secure),))
            raise _signature_refused(given, now)
        kept = incoming.cookies.get(SIGNED_COOKIE)
        if kept and signature_valid(route.signing_key, route.sandbox_id, route.port, kept, now):
            incoming.check_cookie_origin()
            return Admit()
        if kept:
            raise _signature_refused(kept, now)
        raise PermissionDeniedError("this preview opens with a signed URL only",
                                    details={"reason": "signature_required"})

    async def _private(self, incoming: Incoming, route: PreviewRoute) -> Admit | Redirect:
        now = time.time()
        token = incoming.param(TOKEN_PARAM)
        if token is not None:
            grant = await self.grants.redeem(token, now)
            if grant is None or (grant.sandbox_id, grant.port) != (route.sandbox_id, route.port):
                raise PermissionDeniedError("this sign-in link is invalid, expired or used already",
                                            details={"reason": "preview_token"})
            await self._still_allowed(grant, route)
            cookie = await self.grants.cookie(Grant(grant.user_id, route.sandbox_id, route.port,
                                                    int(now + COOKIE_LIFETIME.total_seconds())))
            max_age = int(COOKIE_LIFETIME.total_seconds())
            return Redirect(incoming.url(), (set_cookie(PREVIEW_COOKIE, cookie, max_age, self._secure),))
        grant = await self.grants.from_cookie(incoming.cookies.get(PREVIEW_COOKIE), now)
        if grant is not None and (grant.sandbox_id, grant.port) == (route.sandbox_id, route.port):
            incoming.check_cookie_origin()
            await self._still_allowed(grant, route)
            return Admit()
        if incoming.wants_html and incoming.method in ("GET", "HEAD"):
            origin = control_plane_origin(self.services, self.domain, incoming)
            return Redirect(f"{origin}{AUTH_PATH}?" + urlencode({"to": incoming.url()}))
        raise AuthenticationError("this preview is private: send 'Authorization: Bearer qbox_…' "
                                  "or open it in a browser to sign in")

    async def _still_allowed(self, grant: Grant, route: PreviewRoute) -> None:
        principal = await self.grants.principal(grant.user_id)
        if principal is None or not await self.services.ports.can_open_private(route, principal):
            raise not_exposed(route.sandbox_id, route.port)


def _signature_refused(signature: str, now: float) -> PermissionDeniedError:
    expires = signature.partition(".")[0]
    if expires.isdigit() and len(expires) <= 12 and int(expires) <= now:
        return PermissionDeniedError("this signed URL has expired", details={"reason": "signature_expired"})
    return PermissionDeniedError("this signed URL is not valid (a newer one replaced it, or it was altered)",
                                 details={"reason": "signature_invalid"})


_TITLES = {400: "Bad request", 401: "Sign-in needed", 403: "Not allowed", 404: "Not found",
           502: "Nothing answered", 503: "Busy for a moment", 504: "No answer in time"}


def refusal(error: QboxError, wants_html: bool) -> Response:
    """The error as a small page for a browser, else as the API's error envelope."""
    headers = {"Cache-Control": "no-store"}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(round(error.retry_after))))
    if not wants_html:
        return JSONResponse(error.to_wire(), status_code=error.status, headers=headers)
    title = _TITLES.get(error.status, "Error")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} · qbox preview</title>"
            f"<meta name=viewport content='width=device-width'></head><body style='font-family:sans-serif;"
            f"max-width:40em;margin:4em auto'><h1>{title}</h1><p>{html.escape(error.message)}</p>"
            f"<p><small>qbox preview · {error.status} {html.escape(error.code)}</small></p></body></html>")
    return Response(page, status_code=error.status, media_type="text/html", headers=headers)
