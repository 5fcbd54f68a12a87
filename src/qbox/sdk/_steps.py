"""Plain data exchanged between SDK operations and the drivers that run them.

Every SDK operation is written once, as a generator that *yields* steps and
*receives* their results:

    Send(request)  -> HttpResponse   (or a TransportError thrown back in)
    Open(request)  -> HttpResponse   its body left unread in ``stream`` on a 2xx
    Read(stream)   -> bytes | None   the stream's next chunk; None at its end
    Close(stream)  -> None           an opened stream given up before its end
    Sleep(seconds) -> None
    Now()          -> float          (monotonic seconds)

A sync driver and an async driver (``_transport.py``) execute the same
generators, so request building, response parsing, retries and polling
exist in one copy. Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar

T = TypeVar("T")

CHUNK_SIZE = 256 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Upload:
    """A raw request body that the driver reads from ``source`` chunk by chunk, never whole.

    ``length`` (when known) is sent as Content-Length, else the body goes
    chunked; ``on_chunk`` hears the size of each chunk as it is sent.
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


@dataclass(frozen=True)
class Send:
    request: HttpRequest


@dataclass(frozen=True)
class Open:
    """Like ``Send``, but a 2xx body is left to stream; an error body is read whole."""

    request: HttpRequest


@dataclass(frozen=True)
class Read:
    """The next chunk of an ``Open`` response's ``stream`` (a TransportError is thrown back in)."""

    stream: Any


@dataclass(frozen=True)
class Close:
    stream: Any


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Now:
    pass


Step: TypeAlias = Send | Open | Read | Close | Sleep | Now
# An operation returning T: ``result = yield from op`` composes them.
Op: TypeAlias = Generator[Step, Any, T]
