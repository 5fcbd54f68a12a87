"""A stand-in control plane for the agent's joining and heartbeat tests, over httpx's
MockTransport: the two routes an agent calls, with what the real ones refuse (a token used
twice, an unknown or revoked credential), an outage switch, and every request recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from qbox.core.timefmt import to_wire

URL = "http://control-plane.test"


def _refusal(code: str, message: str) -> httpx.Response:
    return httpx.Response(401, json={"error": {"code": code, "message": message}})


@dataclass
class StandInControlPlane:
    tokens: set[str] = field(default_factory=lambda: {"tok-1"})
    heartbeat_seconds: float = 5.0
    fence_seconds: float = 60.0
    deadlines: dict[str, datetime | None] = field(default_factory=dict)
    # Outage: every call fails to connect; failing: every call answers 503.
    down: bool = False
    failing: bool = False
    revoked: bool = False
    joins: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_auth: list[str] = field(default_factory=list)

    host_id = "host_standin1"
    credential = "cred-standin"
    agent_secret = "agent-secret-from-the-control-plane"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.failing:
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "db"}})
        body = json.loads(request.content)
        if request.url.path == "/v1/agent/join":
            return self._join(body)
        if request.url.path == "/v1/agent/heartbeat":
            return self._heartbeat(request, body)
        return httpx.Response(404)

    def _join(self, body: dict[str, Any]) -> httpx.Response:
        self.joins.append(body)
        if body["token"] not in self.tokens:
            return _refusal("invalid_join_token", "this join token is unknown, used or expired")
        self.tokens.discard(body["token"])
        return httpx.Response(201, json={
            "hostId": self.host_id, "credential": self.credential,
            "agentSecret": self.agent_secret, "heartbeatSeconds": self.heartbeat_seconds,
            "fenceSeconds": self.fence_seconds})

    def _heartbeat(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        self.heartbeat_auth.append(request.headers.get("authorization", ""))
        if self.revoked or request.headers.get("authorization") != f"Bearer {self.credential}":
            return _refusal("invalid_host_credential", "unknown or revoked host credential")
        self.heartbeats.append(body)
        return httpx.Response(200, json={
            "hostId": self.host_id, "status": "ready",
            "heartbeatSeconds": self.heartbeat_seconds, "fenceSeconds": self.fence_seconds,
            "deadlines": {k: to_wire(v) for k, v in self.deadlines.items()}})
