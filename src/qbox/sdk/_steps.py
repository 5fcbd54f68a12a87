"""Plain data exchanged between SDK operations and the drivers that run them.

Every SDK operation is written once, as a generator that *yields* steps and
*receives* their results:

    Send(request)  -> HttpResponse   (or a TransportError thrown back in)
    Sleep(seconds) -> None
    Now()          -> float          (monotonic seconds)

A sync driver and an async driver (``_transport.py``) execute the same
generators, so request building, response parsing, retries and polling
exist in one copy. Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None  # None: no body
    timeout: float | None = None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    content: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Send:
    request: HttpRequest


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Now:
    pass


Step: TypeAlias = Send | Sleep | Now
# An operation returning T: ``result = yield from op`` composes them.
Op: TypeAlias = Generator[Step, Any, T]
