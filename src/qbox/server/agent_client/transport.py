"""The wire to one host agent: its connection pools, URL paths, and errors.

Agent errors come back in the public error envelope and are re-raised as the
same ``qbox.core.errors`` class, so a ``sandbox_not_found`` from the agent is
a ``SandboxNotFoundError`` here. An agent that cannot be reached is
``HostUnavailableError`` (503, transient); an answer that is not the
protocol's body is ``internal`` (500).

Every path segment of an internal URL is percent-encoded whole (``path``):
an id holding ``/``, ``?``, ``#``, ``%`` or control characters names one
segment, never another route or a query. Calls that last as long as a
user's command (exec, follows, output reads, transfers, builds) travel on
connections of their own, outside the pool the short calls share, so a
member's long execs never make anyone else's calls wait; ``MAX_LONG_CALLS``
bounds how many one agent carries at once (past it: 503 host_no_capacity).
Requests relayed to a sandbox's port (preview URLs) have a pool of their own
(``relay=True``), kept alive and as bounded.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from qbox.core.error_codes import error_from_wire
from qbox.core.errors import HostNoCapacityError, HostUnavailableError, QboxError
from qbox.protocol.wire import Wire

# Exec and command calls may legitimately run long; the agent enforces the
# command's own timeout, this is the backstop for a stuck agent.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Long calls, each on a connection of its own (none kept alive, none shared). A
# member's share of them is bounded by their command quota; this bounds the host's.
MAX_LONG_CALLS = 1024
LONG_LIMITS = httpx.Limits(max_connections=MAX_LONG_CALLS, max_keepalive_connections=0)
# Past MAX_LONG_CALLS a call waits this long for one to end, then is refused.
LONG_POOL_WAIT = 5.0
# No read timeout: output may pause for as long as the command likes.
UNBOUNDED = httpx.Timeout(None, connect=5.0, pool=LONG_POOL_WAIT)
# Relayed requests to a sandbox's port (preview URLs): as many as long calls, on a pool
# of their own, so visitors of previews never take the long calls' (nor theirs), and
# kept alive: a page loads dozens of small files. Idle ones go before the agent's server
# drops them (uvicorn: after 5 s), so a kept connection is rarely found closed.
RELAY_LIMITS = httpx.Limits(max_connections=MAX_LONG_CALLS, max_keepalive_connections=64,
                            keepalive_expiry=4.0)
# A transfer's chunks keep coming; the last step (the agent's fsync of a large
# file) may take long, so only connecting has a short limit.
TRANSFER_TIMEOUT = httpx.Timeout(600.0, connect=5.0, pool=LONG_POOL_WAIT)
PREFIX = "/internal/v1"

W = TypeVar("W", bound=Wire)


@dataclass(frozen=True)
class AgentEndpoint:
    """How to reach one agent: a unix socket path or an http(s) URL, and its secret. An
    https agent's certificate is checked against ``ca_pem`` (the cluster CA, which signed
    it when the host joined), or against the system's roots when None."""

    address: str
    secret: str
    ca_pem: str | None = None

    @property
    def over_http(self) -> bool:
        return self.address.startswith(("http://", "https://"))

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context for an https agent (certificate and name checked); None otherwise."""
        if not self.address.startswith("https://"):
            return None
        return ssl.create_default_context(cadata=self.ca_pem)


@dataclass
class Relayed:
    """An agent's answer relayed as it arrives (JSON or NDJSON bytes). Close it once
    done — also when it was never read (its client went away first)."""

    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks


def agent_error(status: int, body: Any) -> QboxError:
    """The QboxError an agent's error answer stands for."""
    error = error_from_wire(status, body)
    if error.status == 401:
        # Our own credentials to the agent are wrong: not the client's fault.
        return QboxError("control plane is not authorised at the host agent",
                         code="internal", status=500)
    return error


def _error_of(response: httpx.Response) -> QboxError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return agent_error(response.status_code, body)


def parsed(model: type[W], data: Any) -> W:
    """``data`` as the protocol body ``model``; anything else is the agent's fault."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise QboxError(f"host agent sent a malformed {model.__name__}: {exc.error_count()} "
                        "field(s) wrong", code="internal", status=500) from None


def parsed_list(model: type[W], data: Any) -> list[W]:
    if not isinstance(data, list):
        raise QboxError(f"host agent sent no list of {model.__name__}", code="internal",
                        status=500)
    return [parsed(model, item) for item in data]


def _segment(value: str | int) -> str:
    text = quote(str(value), safe="")
    # "." and ".." would be dot segments, which URL normalisation removes.
    return text.replace(".", "%2E") if text in (".", "..") else text


def path(*segments: str | int) -> str:
    """An internal URL path (below /internal/v1), every segment percent-encoded whole."""
    return "".join("/" + _segment(segment) for segment in segments)


async def raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """An answer's bytes as they come; the answer is closed at their end."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()


async def _relay_lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """An NDJSON stream's lines; one the agent breaks off just ends (the client sees no
    last event and may fall back to polling), never with half a line."""
    try:
        async for line in response.aiter_lines():
            if line:
                yield line.encode() + b"\n"
    except httpx.HTTPError:
        return
    finally:
        await response.aclose()


async def json_events(response: httpx.Response) -> AsyncGenerator[Any, None]:
    """An NDJSON stream's objects; a broken connection ends it early (the caller sees no
    last event). Closing the iterator closes the connection."""
    try:
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event
    except httpx.HTTPError:
        return
    finally:
        await response.aclose()


def long_timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=5.0, pool=LONG_POOL_WAIT)


class Transport:
    """Requests to one agent: short calls share a pool; long ones (``long=True``) never
    use it and are bounded by ``MAX_LONG_CALLS``."""

    def __init__(self, endpoint: AgentEndpoint,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.endpoint = endpoint
        base_url = endpoint.address.rstrip("/") if endpoint.over_http else "http://agent"
        tls = endpoint.tls()

        def client(limits: httpx.Limits, timeout: httpx.Timeout) -> httpx.AsyncClient:
            own = transport
            if own is None:
                own = httpx.AsyncHTTPTransport(limits=limits, uds=None if endpoint.over_http
                                               else endpoint.address, verify=tls or True)
            return httpx.AsyncClient(
                base_url=base_url + PREFIX, transport=own, timeout=timeout,
                headers={"Authorization": f"Bearer {endpoint.secret}"})

        self._short = client(httpx.Limits(max_connections=100, max_keepalive_connections=20),
                             DEFAULT_TIMEOUT)
        self._long = client(LONG_LIMITS, UNBOUNDED)
        self._relay = client(RELAY_LIMITS, UNBOUNDED)

    def _client(self, long: bool, relay: bool) -> httpx.AsyncClient:
        return self._relay if relay else self._long if long else self._short

    def request(self, method: str, url: str, *, long: bool = False, relay: bool = False,
                **kwargs: Any) -> httpx.Request:
        return self._client(long, relay).build_request(method, url, **kwargs)

    async def send(self, request: httpx.Request, *, stream: bool = False,
                   long: bool = False, relay: bool = False,
                   relayed_marked: str | None = None) -> httpx.Response:
        """Send ``request``; an error answer is raised as its QboxError (body read first).
        ``relay``: a request relayed to a sandbox's port, on the relays' own pool; an
        answer carrying the header ``relayed_marked`` is the port's, returned whatever its
        status."""
        try:
            response = await self._client(long, relay).send(request, stream=stream)
        except httpx.PoolTimeout as exc:
            if relay:
                raise HostNoCapacityError(
                    f"the host agent relays {MAX_LONG_CALLS} requests to sandbox ports "
                    "already; retry when some have ended") from exc
            if not long:
                raise HostUnavailableError(
                    f"host agent did not answer in time ({request.method} {request.url.path})"
                ) from exc
            raise HostNoCapacityError(
                f"the host agent carries {MAX_LONG_CALLS} long-running calls already; "
                "retry when some have ended") from exc
        except httpx.TimeoutException as exc:
            raise HostUnavailableError(
                f"host agent did not answer in time ({request.method} {request.url.path})"
            ) from exc
        except (httpx.TransportError, OSError) as exc:
            # OSError: a pooled connection that broke under us (seen as EBADF after a
            # cancelled request) is the agent being unreachable, not a server bug.
            raise HostUnavailableError(f"host agent unreachable: {exc!r}") from exc
        if response.status_code >= 400 and (relayed_marked is None
                                             or relayed_marked not in response.headers):
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise _error_of(response)
        return response

    async def call(self, method: str, url: str, *, body: Wire | None = None,
                   params: Wire | dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        """A JSON call, its answer's JSON (None for none); one given a ``timeout`` (longer
        than the default) is a long call."""
        long = timeout is not None
        request = self.request(
            method, url, long=long, json=None if body is None else body.wire(),
            params=params.wire() if isinstance(params, Wire) else params,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else long_timeout(timeout))
        response = await self.send(request, long=long)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def relayed(self, request: httpx.Request, *, lines: bool = False) -> Relayed:
        """A long call's answer, relayed as it arrives (``lines``: NDJSON, whole lines)."""
        response = await self.send(request, stream=True, long=True)
        return Relayed(_relay_lines(response) if lines else raw_chunks(response), response.aclose)

    async def streamed(self, request: httpx.Request) -> httpx.Response:
        """A long call's open answer (read it, then close it)."""
        return await self.send(request, stream=True, long=True)

    async def aclose(self) -> None:
        await self._short.aclose()
        await self._long.aclose()
        await self._relay.aclose()
