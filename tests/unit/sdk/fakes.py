"""A scripted qbox API behind ``httpx.MockTransport``, and a clock that never waits."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from qbox.sdk import ConnectionConfig

BASE_URL = "http://qbox.test"
API_KEY = "qbox_testkey"

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {"X-Request-Id": "req_test", **(headers or {})}
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def error(status: int, code: str, message: str = "nope", details: Any = None, **headers: str) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return reply(status, {"error": body}, headers=headers)


def sandbox(sid: str = "sb_abc12345", status: str = "running", **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "templateId": "tpl_python",
        "status": status,
        "vm": {"vcpus": 1, "memoryMb": 512},
        "services": [],
        "labels": {},
        "timeoutSeconds": 300,
        "hostId": "host_1",
        "createdAt": "2025-01-02T03:04:05.000000Z",
        "bootedAt": "2025-01-02T03:04:06.000000Z",
        "endedAt": None,
        "allowInternetAccess": True,
        **extra,
    }


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]
    headers: httpx.Headers
    body: Any
    timeout: dict[str, float | None]

    @property
    def target(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class FakeServer:
    """Routes ``(METHOD, path)`` to queued replies; the last reply of a route repeats."""

    routes: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, *replies: Reply) -> FakeServer:
        self.routes.setdefault((method, path), []).extend(replies)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.seen.append(
            Seen(
                request.method,
                request.url.path,
                dict(request.url.params),
                request.headers,
                body,
                dict(request.extensions.get("timeout", {})),
            )
        )
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return error(404, "not_found", f"no fake route {request.method} {request.url.path}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            # A fresh copy: httpx binds a served response to the client that read it.
            return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)
        return answer(request)

    @property
    def targets(self) -> list[str]:
        return [s.target for s in self.seen]

    def last(self, method: str, path: str) -> Seen:
        return [s for s in self.seen if s.method == method and s.path == path][-1]

    def config(self, **overrides: Any) -> ConnectionConfig:
        values: dict[str, Any] = {
            "api_key": API_KEY,
            "base_url": BASE_URL,
            "transport": httpx.MockTransport(self.handle),
            "clock": FakeClock(),
        }
        values.update(overrides)
        return ConnectionConfig(**values)


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
