"""The I/O steps that SDK operations yield, and the loops that run operations.

Every SDK operation is written once, as a generator of ``IoStep``s; the
answer to each comes back through ``yield from``, typed by the step:

    answer = yield from Send(request)   HttpResponse  (or a QboxError raised here)
    answer = yield from Open(request)   HttpResponse, its body left unread in ``stream`` on a 2xx
    answer = yield from Read(stream)    bytes | None  the stream's next chunk; None at its end
    yield from Close(stream)            an opened stream given up before its end
    yield from Sleep(seconds)
    answer = yield from Now()           float (monotonic seconds)
    yield from Deliver(callback, value) a user's callback called (and awaited, when async)

``drive`` and ``adrive`` run the same generators against a blocking or an
asyncio ``SyncIo``/``AsyncIo`` (``_transport.py``), so request building,
response parsing, retries and polling exist in one copy. Each step names the
``SyncIo``/``AsyncIo`` call that answers it (``run``/``arun``), so mypy checks
the answer's type at both ends; an ``Op`` receives ``object`` from a bare
``yield``, which cannot be used as an answer by mistake. Nothing here
performs I/O: the ``SyncIo``/``AsyncIo`` do.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")

CHUNK_SIZE = 256 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Upload:
    """A raw request body that the driver reads from ``source`` chunk by chunk, never whole.

    ``length`` (when known) is sent as Content-Length, else the body goes
    chunked; ``on_chunk`` hears 0 when sending starts, then the size of each
    chunk as it is sent (the async driver awaits what it returns, if awaitable).
    """

    source: Readable
    length: int | None = None
    chunk_size: int = CHUNK_SIZE
    on_chunk: Callable[[int], object] | None = None


Body: TypeAlias = bytes | Upload


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None  # None: no JSON body
    content: Body | None = None  # a raw body, sent without a Content-Type
    timeout: float | None = None  # None: no timeout at all


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    content: bytes = b""
    stream: Any = None  # an ``Open`` 2xx: the driver's unread body (``ByteStream`` / ``AsyncByteStream``)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class SyncIo(Protocol):
    """What a blocking driver does for steps; a transport failure raises a ``QboxError``."""

    def send(self, request: HttpRequest) -> HttpResponse: ...

    def open(self, request: HttpRequest) -> HttpResponse: ...

    def read(self, stream: Any) -> bytes | None: ...

    def close(self, stream: Any) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> float: ...

    def deliver(self, callback: Callable[[V], object], value: V) -> None: ...


class AsyncIo(Protocol):
    """What an asyncio driver does for steps; ``deliver`` awaits what a callback returns."""

    async def send(self, request: HttpRequest) -> HttpResponse: ...

    async def open(self, request: HttpRequest) -> HttpResponse: ...

    async def read(self, stream: Any) -> bytes | None: ...

    async def close(self, stream: Any) -> None: ...

    async def sleep(self, seconds: float) -> None: ...

    def now(self) -> float: ...

    async def deliver(self, callback: Callable[[V], object], value: V) -> None: ...


class IoStep(ABC, Generic[R]):
    """One piece of I/O an operation asks its driver for, answered with an ``R``.

    ``answer = yield from step`` yields the step and returns the driver's
    answer, typed ``R`` (as httpx's ``auth_flow`` receives a ``Response``).
    """

    def __iter__(self) -> Generator[IoStep[R], R, R]:
        return (yield self)

    @abstractmethod
    def run(self, io: SyncIo) -> R: ...

    @abstractmethod
    async def arun(self, io: AsyncIo) -> R: ...


@dataclass(frozen=True)
class Send(IoStep[HttpResponse]):
    request: HttpRequest

    def run(self, io: SyncIo) -> HttpResponse:
        return io.send(self.request)

    async def arun(self, io: AsyncIo) -> HttpResponse:
        return await io.send(self.request)


@dataclass(frozen=True)
class Open(IoStep[HttpResponse]):
    """Like ``Send``, but a 2xx body is left to stream; an error body is read whole."""

    request: HttpRequest

    def run(self, io: SyncIo) -> HttpResponse:
        return io.open(self.request)

    async def arun(self, io: AsyncIo) -> HttpResponse:
        return await io.open(self.request)


@dataclass(frozen=True)
class Read(IoStep[bytes | None]):
    """The next chunk of an ``Open`` response's ``stream``; None at its end."""

    stream: Any

    def run(self, io: SyncIo) -> bytes | None:
        return io.read(self.stream)

    async def arun(self, io: AsyncIo) -> bytes | None:
        return await io.read(self.stream)


@dataclass(frozen=True)
class Close(IoStep[None]):
    stream: Any

    def run(self, io: SyncIo) -> None:
        io.close(self.stream)

    async def arun(self, io: AsyncIo) -> None:
        await io.close(self.stream)


@dataclass(frozen=True)
class Sleep(IoStep[None]):
    seconds: float

    def run(self, io: SyncIo) -> None:
        io.sleep(self.seconds)

    async def arun(self, io: AsyncIo) -> None:
        await io.sleep(self.seconds)


@dataclass(frozen=True)
class Now(IoStep[float]):
    def run(self, io: SyncIo) -> float:
        return io.now()

    async def arun(self, io: AsyncIo) -> float:
        return io.now()


@dataclass(frozen=True)
class Deliver(IoStep[None], Generic[V]):
    """Hand ``value`` to a user's callback. A step, not a call, so the async driver can await
    an ``async def`` callback; what it raises is raised at the ``yield from``."""

    callback: Callable[[V], object]
    value: V

    def run(self, io: SyncIo) -> None:
        io.deliver(self.callback, self.value)

    async def arun(self, io: AsyncIo) -> None:
        await io.deliver(self.callback, self.value)


# What the async SDK takes as a callback: a plain function, or an ``async def`` one it awaits.
AsyncCallback: TypeAlias = Callable[[V], None] | Callable[[V], Awaitable[None]]

# An operation returning T: ``result = yield from op`` composes them.
Op: TypeAlias = Generator[IoStep[Any], object, T]


async def settle(result: object) -> None:
    """Await what a user's callback returned when it is awaitable (an ``async def`` callback)."""
    if inspect.isawaitable(result):
        await result


def drive(op: Op[T], io: SyncIo) -> T:
    """Run an operation to completion, blocking.

    What a step raises (a transport failure, a callback's error) is thrown back
    into the operation, so its ``try``/``finally`` see it.
    """
    reply: object = None
    error: Exception | None = None
    while True:
        try:
            step = op.send(reply) if error is None else op.throw(error)
        except StopIteration as stop:
            return cast(T, stop.value)
        reply, error = None, None
        try:
            reply = step.run(io)
        except Exception as exc:  # noqa: BLE001 - re-raised in the op, at the step it yielded
            error = exc


async def adrive(op: Op[T], io: AsyncIo) -> T:
    """Run an operation to completion on the event loop (as ``drive``)."""
    reply: object = None
    error: Exception | None = None
    while True:
        try:
            step = op.send(reply) if error is None else op.throw(error)
        except StopIteration as stop:
            return cast(T, stop.value)
        reply, error = None, None
        try:
            reply = await step.arun(io)
        except Exception as exc:  # noqa: BLE001 - re-raised in the op, at the step it yielded
            error = exc
