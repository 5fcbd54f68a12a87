"""Transports (the only code that touches httpx) and the drivers that run operations.

``SyncTransport`` / ``AsyncTransport`` send one ``HttpRequest`` and return one
``HttpResponse``; failures to get an answer become ``ConnectionFailedError`` /
``RequestTimeoutError`` here, so httpx exceptions never reach users. A
``Connection`` pairs a transport with the ``Api`` and runs operations with
``drive`` (sync) or ``adrive`` (async) — the same generators either way.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, cast
from urllib.parse import urlsplit

import httpx

from qbox.core.errors import ConnectionFailedError, QboxError, RequestTimeoutError, TransportError
from qbox.sdk._api import Api
from qbox.sdk._config import Clock, ConnectionConfig, resolve
from qbox.sdk._steps import HttpRequest, HttpResponse, Now, Op, Send, Sleep

T = TypeVar("T")


class SyncTransport(Protocol):
    def send(self, request: HttpRequest) -> HttpResponse: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    async def send(self, request: HttpRequest) -> HttpResponse: ...

    async def close(self) -> None: ...


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def transport_error(exc: Exception, request: HttpRequest) -> TransportError:
    """The SDK error for an httpx failure. ``transient`` when the request surely never left."""
    origin = _origin(request.url)
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return RequestTimeoutError(f"timed out connecting to {origin}", details={"transient": True, "phase": "connect"})
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(
            f"no answer to {request.method} {request.url} within {request.timeout:g}s",
            details={"phase": "read"},
        )
    if isinstance(exc, httpx.ConnectError):
        return ConnectionFailedError(f"could not connect to {origin}: {exc}", details={"transient": True})
    return ConnectionFailedError(f"{type(exc).__name__} talking to {origin}: {exc}")


def _build(client: httpx.Client | httpx.AsyncClient, request: HttpRequest) -> httpx.Request:
    return client.build_request(
        request.method,
        request.url,
        params=dict(request.params) or None,
        headers=dict(request.headers),
        json=request.json,
        timeout=request.timeout,
    )


def _response(response: httpx.Response) -> HttpResponse:
    headers = {name.lower(): value for name, value in response.headers.items()}
    return HttpResponse(status=response.status_code, headers=headers, content=response.content)


class HttpxTransport:
    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(transport=transport, follow_redirects=False)

    def send(self, request: HttpRequest) -> HttpResponse:
        try:
            return _response(self._client.send(_build(self._client, request)))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, request) from exc

    def close(self) -> None:
        self._client.close()


class AsyncHttpxTransport:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False)

    async def send(self, request: HttpRequest) -> HttpResponse:
        try:
            return _response(await self._client.send(_build(self._client, request)))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, request) from exc

    async def close(self) -> None:
        await self._client.aclose()


def drive(op: Op[T], transport: SyncTransport, clock: Clock) -> T:
    """Run an operation to completion, blocking."""
    reply: Any = None
    error: QboxError | None = None
    while True:
        try:
            step = op.send(reply) if error is None else op.throw(error)
        except StopIteration as stop:
            return cast(T, stop.value)
        reply, error = None, None
        if isinstance(step, Send):
            try:
                reply = transport.send(step.request)
            except QboxError as exc:
                error = exc
        elif isinstance(step, Sleep):
            clock.sleep(step.seconds)
        elif isinstance(step, Now):
            reply = clock.now()


async def adrive(op: Op[T], transport: AsyncTransport, clock: Clock) -> T:
    """Run an operation to completion on the event loop."""
    reply: Any = None
    error: QboxError | None = None
    while True:
        try:
            step = op.send(reply) if error is None else op.throw(error)
        except StopIteration as stop:
            return cast(T, stop.value)
        reply, error = None, None
        if isinstance(step, Send):
            try:
                reply = await transport.send(step.request)
            except QboxError as exc:
                error = exc
        elif isinstance(step, Sleep):
            await clock.asleep(step.seconds)
        elif isinstance(step, Now):
            reply = clock.now()


def _resolved(
    config: ConnectionConfig | None,
    api_key: str | None,
    base_url: str | None,
    request_timeout: float | None,
) -> ConnectionConfig:
    return resolve((config or ConnectionConfig()).merged(api_key, base_url, request_timeout))


class Connection:
    """An ``Api`` plus a blocking transport."""

    def __init__(self, config: ConnectionConfig, transport: SyncTransport | None = None) -> None:
        self.api = Api(config)
        self.clock = config.clock or Clock()
        self.transport = transport or HttpxTransport(config.transport)

    @classmethod
    def open(
        cls,
        config: ConnectionConfig | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
    ) -> Connection:
        return cls(_resolved(config, api_key, base_url, request_timeout))

    def run(self, op: Op[T]) -> T:
        return drive(op, self.transport, self.clock)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncConnection:
    """An ``Api`` plus an asyncio transport."""

    def __init__(self, config: ConnectionConfig, transport: AsyncTransport | None = None) -> None:
        self.api = Api(config)
        self.clock = config.clock or Clock()
        self.transport = transport or AsyncHttpxTransport(config.transport)

    @classmethod
    def open(
        cls,
        config: ConnectionConfig | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
    ) -> AsyncConnection:
        return cls(_resolved(config, api_key, base_url, request_timeout))

    async def run(self, op: Op[T]) -> T:
        return await adrive(op, self.transport, self.clock)

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
