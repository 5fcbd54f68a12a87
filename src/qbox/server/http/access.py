"""Who may call a route, declared on the route: ``Access(scope, buckets, audit=...)``.

Each step is its own function and ``Access.check`` composes them in this
order, which decides what a refused caller hears first: the audit declaration
(a refusal is audited under the route's action), the origin of a session
cookie, the credentials (failures limited per source address), the rate-limit
buckets the route names, the scope, and the form of the path's ids. Only then
does the route's audit note go with the changes the request commits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends
from starlette.requests import HTTPConnection, Request

from qbox.core.errors import (
    AuthenticationError,
    InvalidHostCredentialError,
    ContextNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProcessNotFoundError,
    QboxError,
    RateLimitedError,
    SandboxNotFoundError,
    TemplateNotFoundError,
)
from qbox.core.ids import is_path_id
from qbox.server.http.auditing import Audited, allowed_to_change, note_of, refused
from qbox.server.http.deps import client_ip, services_of
from qbox.server.principal import HostCredential, Principal
from qbox.server.services.keys import principal_for_secret
from qbox.server.services.ratelimit import RateLimiter
from qbox.server.services.web_sessions import SESSION_COOKIE

_HTTP_SCHEMES = {"ws": "http", "wss": "https"}
# What a malformed path id is not found as (other parameters: not_found).
_NOT_FOUND: dict[str, type[NotFoundError]] = {
    "sandbox_id": SandboxNotFoundError,
    "template_id": TemplateNotFoundError,
    "context_id": ContextNotFoundError,
    "pid": ProcessNotFoundError,
}


class Bucket(enum.Enum):
    """A token bucket a route's callers draw from (per API key), and what a 429 calls it."""

    REQUESTS = "requests"
    SPAWNS = "sandbox spawns"

    def limiter(self, conn: HTTPConnection) -> RateLimiter:
        limits = services_of(conn).limits
        return limits.spawns if self is Bucket.SPAWNS else limits.requests


def rate_limited(retry_after: float, what: str) -> RateLimitedError:
    seconds = max(1, int(retry_after + 0.999))
    return RateLimitedError(f"rate limit exceeded for {what}; retry in {seconds} s",
                            details={"retryAfterSeconds": seconds}, retry_after=seconds)


def same_origin(conn: HTTPConnection, *, strict: bool = False) -> bool:
    """Whether the Origin (or Referer) is our own (or QBOX_PUBLIC_URL's); a WebSocket's
    ws/wss is our http/https.

    Without either header a request counts as same-origin (non-browser clients,
    which still need the CSRF token), unless ``strict``.
    """
    origin = conn.headers.get("origin") or (None if strict else conn.headers.get("referer"))
    if not origin:
        return not strict
    parts = urlsplit(origin)
    scheme = _HTTP_SCHEMES.get(conn.url.scheme, conn.url.scheme)
    given = f"{parts.scheme}://{parts.netloc}"
    if given == f"{scheme}://{conn.url.netloc}":
        return True
    # Behind a load balancer that ends TLS, this replica sees http://its-address while
    # browsers are on the public URL the operator configured (QBOX_PUBLIC_URL).
    public = services_of(conn).ctx.settings.public_url
    return public is not None and given == "{0.scheme}://{0.netloc}".format(urlsplit(public))


def _credentials(conn: HTTPConnection) -> tuple[str, str]:
    """The Authorization header's scheme (lower case) and token."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    return scheme.lower(), token.strip()


async def credentials_principal(conn: HTTPConnection, *, cookie: bool = False) -> Principal | None:
    """Whom the bearer key (or, if ``cookie``, the dashboard session) names; None if nobody.

    The cookie counts only from our own origin, which the caller checks first.
    """
    services = services_of(conn)
    scheme, token = _credentials(conn)
    if scheme == "bearer" and token:
        async with services.ctx.sessions() as session:
            return await principal_for_secret(session, token)
    if cookie and not token and (found := await services.web_sessions.resolve(conn.cookies.get(SESSION_COOKIE))):
        return found.principal
    return None


def cookie_from_elsewhere(conn: HTTPConnection) -> bool:
    """A session cookie, with no key, sent from another site's page: it names nobody."""
    _scheme, token = _credentials(conn)
    return not token and SESSION_COOKIE in conn.cookies and not same_origin(conn, strict=True)


async def authenticated(conn: HTTPConnection, *, cookie: bool = False) -> Principal:
    """Who calls: a bearer key, or with ``cookie`` also the dashboard session from our own origin.

    A failure is audited, and limited per source address.
    """
    cross_site = cookie and cookie_from_elsewhere(conn)
    principal = None if cross_site else await credentials_principal(conn, cookie=cookie)
    if principal is not None:
        return principal
    refused(conn, "auth.failed")
    failed_authentication(conn)
    if cross_site:
        raise PermissionDeniedError("the session cookie is accepted only from this server's own origin",
                                    details={"reason": "origin"})
    if not _credentials(conn)[1]:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer qbox_…'")
    raise AuthenticationError("invalid, revoked or expired API key")


def draw(conn: HTTPConnection, principal: Principal, buckets: tuple[Bucket, ...]) -> None:
    """Take a token from each bucket in turn; the first that has none refuses (audited) with 429."""
    for bucket in buckets:
        if wait := bucket.limiter(conn).check(principal.api_key_id or principal.user_id):
            refused(conn, "rate_limited", principal)
            raise rate_limited(wait, bucket.value)


def require_scope(principal: Principal, scope: str | None) -> None:
    if scope is not None and not principal.may(scope):
        raise PermissionDeniedError(
            f"api key missing required scope: {scope}",
            details={"requiredScope": scope, "grantedScopes": sorted(principal.effective)},
        )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDeniedError("this needs an admin", details={"requiredRole": "admin"})


def check_path_ids(conn: HTTPConnection) -> None:
    """404 for a path id not of its kind's format: it names nothing, and never reaches a lookup or a host."""
    for param, value in conn.path_params.items():
        if not is_path_id(param, str(value)):
            error = _NOT_FOUND.get(param, NotFoundError)
            raise error(f"no such {param.removesuffix('_id').replace('_', ' ')}: the id is not of that kind's format",
                        details={"param": param})


@dataclass(frozen=True)
class Access:
    """A route's callers: the scope they need (None: any valid key), the buckets they draw from,
    the audit action of a state-changing route, and whether the dashboard's cookie counts too."""

    scope: str | None
    buckets: tuple[Bucket, ...]
    audit: Audited | None = None
    cookie: bool = False

    async def check(self, conn: HTTPConnection) -> Principal:
        """The caller, allowed; otherwise the refusal, audited under the declared action."""
        if self.audit is not None:
            self.audit.attach(conn)
        principal = await authenticated(conn, cookie=self.cookie)
        if note := note_of(conn):
            note.principal = principal
        draw(conn, principal, self.buckets)
        require_scope(principal, self.scope)
        check_path_ids(conn)
        allowed_to_change(conn)
        return principal

    async def attempt(self, conn: HTTPConnection) -> Principal | QboxError:
        """``check`` for a WebSocket, which answers a refusal itself (before the upgrade)."""
        try:
            return await self.check(conn)
        except QboxError as exc:
            return exc


def allowed(scope: str | None, *buckets: Bucket, audit: str | None = None) -> Any:
    """The route's ``Principal`` parameter: its access declaration, as a dependency (bearer keys only)."""
    return Depends(Access(scope, buckets, Audited(audit) if audit else None).check)


def failed_authentication(conn: HTTPConnection) -> None:
    """Count a failed authentication against its source address; past the limit, a 429."""
    if wait := services_of(conn).limits.auth_failures.check(client_ip(conn)):
        raise rate_limited(wait, "failed authentications from this address")


async def host_credential(request: Request) -> HostCredential:
    """The route's caller is a joined host: its bearer credential, which its service checks."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        failed_authentication(request)
        raise InvalidHostCredentialError("missing host credential: send 'Authorization: Bearer qbh_…'")
    return HostCredential(secret.strip())
