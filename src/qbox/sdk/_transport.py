"""Transports (the only code that touches httpx) and the I/O that answers operations' steps.

``SyncTransport`` / ``AsyncTransport`` send one ``HttpRequest`` and return one
``HttpResponse`` (``open`` leaves a 2xx body unread, as a ``ByteStream`` /
``AsyncByteStream``); failures to get an answer become ``ConnectionFailedError``
/ ``RequestTimeoutError`` here, so httpx exceptions never reach users. A
``Connection`` pairs a transport with the ``Api`` and runs operations with
``drive`` (sync) or ``adrive`` (async) — the same generators either way.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from qbox.core.errors import ConnectionFailedError, RequestTimeoutError, TransportError
from qbox.sdk._api import Api
from qbox.sdk._config import Clock, ConnectionConfig, resolve
from qbox.sdk._steps import HttpRequest, HttpResponse, Op, Upload, adrive, drive, settle

T = TypeVar("T")
V = TypeVar("V")


class SyncTransport(Protocol):
    def send(self, request: HttpRequest) -> HttpResponse: ...

    def open(self, request: HttpRequest) -> HttpResponse: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    async def send(self, request: HttpRequest) -> HttpResponse: ...

    async def open(self, request: HttpRequest) -> HttpResponse: ...

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
        within = f" within {request.timeout:g}s" if request.timeout is not None else ""
        return RequestTimeoutError(f"no answer to {request.method} {request.url}{within}", details={"phase": "read"})
    if isinstance(exc, httpx.ConnectError):
        return ConnectionFailedError(f"could not connect to {origin}: {exc}", details={"transient": True})
    return ConnectionFailedError(f"{type(exc).__name__} talking to {origin}: {exc}")


def _upload_chunks(upload: Upload) -> Iterator[bytes]:
    if upload.on_chunk is not None:
        upload.on_chunk(0)
    while chunk := bytes(upload.source.read(upload.chunk_size)):
        if upload.on_chunk is not None:
            upload.on_chunk(len(chunk))
        yield chunk


async def _aupload_chunks(upload: Upload) -> AsyncIterator[bytes]:
    if upload.on_chunk is not None:
        await settle(upload.on_chunk(0))
    # A file object's reads block (a pipe may block for long): keep them off the event loop.
    while chunk := bytes(await asyncio.to_thread(upload.source.read, upload.chunk_size)):
        if upload.on_chunk is not None:
            await settle(upload.on_chunk(len(chunk)))
        yield chunk


def _build(
    client: httpx.Client | httpx.AsyncClient,
    request: HttpRequest,
    upload_chunks: Iterator[bytes] | AsyncIterator[bytes] | None = None,
) -> httpx.Request:
    headers = dict(request.headers)
    content = request.content if isinstance(request.content, bytes) else upload_chunks
    if isinstance(request.content, Upload) and request.content.length is not None:
        headers["Content-Length"] = str(request.content.length)  # else httpx sends it chunked
    return client.build_request(
        request.method,
        request.url,
        params=dict(request.params) or None,
        headers=headers,
        json=request.json,
        content=content,
        timeout=request.timeout,
    )


def _response(response: httpx.Response, stream: Any = None) -> HttpResponse:
    headers = {name.lower(): value for name, value in response.headers.items()}
    content = b"" if stream is not None else response.content
    return HttpResponse(status=response.status_code, headers=headers, content=content, stream=stream)


def _length(response: httpx.Response) -> int | None:
    """The body's size in bytes as it will be handed out (unknown when compressed on the wire)."""
    declared = response.headers.get("content-length")
    if response.headers.get("content-encoding") or not declared or not declared.isdigit():
        return None
    return int(declared)


class ByteStream:
    """A response body as an iterator of byte chunks. Exhaust it or ``close()`` it (or use ``with``)."""

    def __init__(self, response: httpx.Response, request: HttpRequest) -> None:
        self._response = response
        self._request = request
        self._chunks = response.iter_bytes()  # as they arrive
        self.length = _length(response)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except httpx.HTTPError as exc:
            self.close()
            raise transport_error(exc, self._request) from exc

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncByteStream:
    """A response body as an async iterator of byte chunks. Exhaust it or ``await aclose()`` it."""

    def __init__(self, response: httpx.Response, request: HttpRequest) -> None:
        self._response = response
        self._request = request
        self._chunks = response.aiter_bytes()  # as they arrive
        self.length = _length(response)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            await self.aclose()
            raise
        except httpx.HTTPError as exc:
            await self.aclose()
            raise transport_error(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class HttpxTransport:
    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(transport=transport, follow_redirects=False)

    def _request(self, request: HttpRequest) -> httpx.Request:
        upload = request.content
        return _build(self._client, request, _upload_chunks(upload) if isinstance(upload, Upload) else None)

    def send(self, request: HttpRequest) -> HttpResponse:
        try:
            return _response(self._client.send(self._request(request)))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, request) from exc

    def open(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self._client.send(self._request(request), stream=True)
            if response.is_success:
                return _response(response, ByteStream(response, request))
            try:
                response.read()
            finally:
                response.close()
            return _response(response)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, request) from exc

    def close(self) -> None:
        self._client.close()


class AsyncHttpxTransport:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False)

    def _request(self, request: HttpRequest) -> httpx.Request:
        upload = request.content
        return _build(self._client, request, _aupload_chunks(upload) if isinstance(upload, Upload) else None)

    async def send(self, request: HttpRequest) -> HttpResponse:
        try:
            return _response(await self._client.send(self._request(request)))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, request) from exc

    async def open(self, request: HttpRequest) -> HttpResponse:
        try:
            response = await self._client.send(self._request(request), stream=True)
            if response.is_success:
                return _response(response, AsyncByteStream(response, request))
            try:
                await response.aread()
            finally:
                await response.aclose()
            return _response(response)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, request) from exc

    async def close(self) -> None:
        await self._client.aclose()


class _BlockingIo:
    """The blocking answers to steps: a transport for requests, a clock for time."""

    def __init__(self, transport: SyncTransport, clock: Clock) -> None:
        self.send = transport.send
        self.open = transport.open
        self.sleep = clock.sleep
        self.now = clock.now

    def read(self, stream: ByteStream) -> bytes | None:
        return next(stream, None)

    def close(self, stream: ByteStream) -> None:
        stream.close()

    def deliver(self, callback: Callable[[V], object], value: V) -> None:
        result = callback(value)
        if inspect.iscoroutine(result):
            # Its body would never run here; say so instead of dropping it.
            result.close()
            raise TypeError(f"{getattr(callback, '__qualname__', callback)!s} is an async "
                            "callback; the sync SDK calls plain functions (use AsyncSandbox)")


class _AsyncIo:
    """The asyncio answers to steps; an ``async def`` callback is awaited."""

    def __init__(self, transport: AsyncTransport, clock: Clock) -> None:
        self.send = transport.send
        self.open = transport.open
        self.sleep = clock.asleep
        self.now = clock.now

    async def read(self, stream: AsyncByteStream) -> bytes | None:
        return await anext(stream, None)

    async def close(self, stream: AsyncByteStream) -> None:
        await stream.aclose()

    async def deliver(self, callback: Callable[[V], object], value: V) -> None:
        await settle(callback(value))


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
        return drive(op, _BlockingIo(self.transport, self.clock))

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
        return await adrive(op, _AsyncIo(self.transport, self.clock))

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
