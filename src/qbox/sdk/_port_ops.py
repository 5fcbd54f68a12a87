"""Ports of a sandbox exposed at preview URLs, written once for sync and async (see ``_steps``).

Wire shapes (WIRE_PROTOCOL.md §4.9): ``POST …/ports`` answers the Port; the list is wrapped
(``{"ports": [...]}``); ``signed-url`` takes ``{}`` or ``{"ttlSeconds": n}``; ``probe`` takes no
body and answers ``{"reachable": bool}``. ``expose`` returns the signed URL of a signed_url port,
else its URL, as the published client does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from qbox.core.errors import PortNotReachableError
from qbox.sdk._api import Api
from qbox.sdk._models import _int, _str, as_list, as_object
from qbox.sdk._steps import Now, Op, Sleep

PROBE_INTERVAL_SECONDS = 0.5


@dataclass(frozen=True)
class PortSpec:
    """A port to expose with the sandbox: ``Sandbox.create("python", ports=[PortSpec(8080)])``.
    It routes as soon as the sandbox runs. ``ttl`` (seconds) goes with ``signed_url`` only;
    ``force`` allows a port under 1024."""

    port: int
    visibility: str = "public"
    host_header_mode: str = "rewrite"
    allowed_users: Sequence[str] | None = None
    force: bool = False
    ttl: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return expose_body(self.port, visibility=self.visibility, allowed_users=self.allowed_users,
                           host_header_mode=self.host_header_mode, ttl=self.ttl, force=self.force)


@dataclass(frozen=True)
class Port:
    """An exposed port: its preview ``url``; for a signed_url port the current ``signed_url``
    and when it expires (epoch seconds); for a private one the users besides the owner who may
    open it."""

    port: int
    visibility: str
    host_header_mode: str
    url: str
    allowed_users: list[str] | None = None
    signed_url: str | None = None
    signed_url_expires_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def host(self) -> str:
        """The preview host (``8000-sb_….example.com[:port]``): what ``Sandbox.get_host`` gives."""
        return urlsplit(self.url).netloc

    @classmethod
    def from_wire(cls, value: Any) -> Port:
        data = as_object(value, "a port")
        users = data.get("allowedUsers")
        expires = data.get("signedUrlExpiresAt")
        return cls(
            port=_int(data, "port"),
            visibility=_str(data, "visibility"),
            host_header_mode=_str(data, "hostHeaderMode"),
            url=_str(data, "url"),
            allowed_users=[str(u) for u in users] if isinstance(users, list) else None,
            signed_url=_str(data, "signedUrl") or None,
            signed_url_expires_at=_int(data, "signedUrlExpiresAt") if expires is not None else None,
            raw=data,
        )


def _checked_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"port must be an integer, got {port!r}")
    return port


def _path(sandbox_id: str, port: int | None = None, suffix: str = "") -> str:
    tail = "" if port is None else f"/{_checked_port(port)}"
    return f"/v1/sandboxes/{sandbox_id}/ports{tail}{suffix}"


def expose_body(port: int, *, visibility: str, allowed_users: Sequence[str] | None, host_header_mode: str,
                ttl: int | None, force: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"port": _checked_port(port), "visibility": visibility,
                            "hostHeaderMode": host_header_mode}
    if allowed_users is not None:
        body["allowedUsers"] = [str(u) for u in allowed_users]
    if ttl is not None:
        body["signedUrlTtlSeconds"] = int(ttl)
    if force:
        body["force"] = True
    return body


def expose(api: Api, sandbox_id: str, body: dict[str, Any]) -> Op[Port]:
    return Port.from_wire((yield from api.post(_path(sandbox_id), json=body)))


def mint_signed_url(api: Api, sandbox_id: str, port: int, ttl: int | None) -> Op[Port]:
    body = {"ttlSeconds": int(ttl)} if ttl is not None else {}
    return Port.from_wire((yield from api.post(_path(sandbox_id, port, "/signed-url"), json=body)))


def list_ports(api: Api, sandbox_id: str) -> Op[list[Port]]:
    data = (yield from api.get(_path(sandbox_id))) or {}
    return [Port.from_wire(p) for p in as_list(as_object(data, "the port list").get("ports"), "the ports")]


def get(api: Api, sandbox_id: str, port: int) -> Op[Port]:
    return Port.from_wire((yield from api.get(_path(sandbox_id, port))))


def update(api: Api, sandbox_id: str, port: int, *, visibility: str | None,
           allowed_users: Sequence[str] | None, host_header_mode: str | None) -> Op[Port]:
    body: dict[str, Any] = {}
    if visibility is not None:
        body["visibility"] = visibility
    if allowed_users is not None:
        body["allowedUsers"] = [str(u) for u in allowed_users]
    if host_header_mode is not None:
        body["hostHeaderMode"] = host_header_mode
    return Port.from_wire((yield from api.request("PATCH", _path(sandbox_id, port), json=body)))


def unexpose(api: Api, sandbox_id: str, port: int) -> Op[None]:
    yield from api.delete(_path(sandbox_id, port))


def probe(api: Api, sandbox_id: str, port: int) -> Op[bool]:
    data = yield from api.post(_path(sandbox_id, port, "/probe"))
    return isinstance(data, dict) and data.get("reachable") is True


def expose_and_wait(api: Api, sandbox_id: str, body: dict[str, Any], timeout: float) -> Op[str]:
    """Expose, then probe every half second until something listens; its URL, or
    ``PortNotReachableError`` after ``timeout`` seconds."""
    exposed = yield from expose(api, sandbox_id, body)
    port = exposed.port
    deadline = (yield from Now()) + timeout
    while True:
        if (yield from probe(api, sandbox_id, port)):
            return exposed.signed_url or exposed.url
        if (yield from Now()) + PROBE_INTERVAL_SECONDS > deadline:
            raise PortNotReachableError(f"nothing answered on port {port} within {timeout:g} s",
                                        details={"sandboxId": sandbox_id, "port": port}, status=0)
        yield from Sleep(PROBE_INTERVAL_SECONDS)
