"""A sandbox's ports reached through its agent: ``/sandboxes/{id}/ports/{port}/…``.

``probe`` answers ``PortProbe``. ``http`` and ``ws`` relay one request (or one
WebSocket) to the port on the sandbox's own address. Their request names the
upstream's target in ``X-Qbox-Target`` (origin-form: ``/path?query``).

The end-to-end headers of the visitor's request, and of the upstream's answer,
travel with ``FORWARDED_PREFIX`` before their names, so they never mix with the
agent's own (its ``Authorization``, the HTTP server's ``Date`` and ``Server``,
the client library's defaults) and an upstream cannot pass for the agent. A
relayed answer carries ``X-Qbox-Relayed: 1``; an answer without it is the
agent's own (its errors also say ``X-Qbox-Agent-Error: 1`` and carry the error
envelope), so even an agent that lacks these routes is never mistaken for an
upstream. ``Content-Length`` is the only header also sent plain, as the framing
of the body that follows.
"""

from __future__ import annotations

from collections.abc import Iterable

from qbox.protocol.wire import Wire

TARGET_HEADER = "x-qbox-target"
AGENT_ERROR_HEADER = "x-qbox-agent-error"
RELAYED_HEADER = "x-qbox-relayed"
FORWARDED_PREFIX = "x-qbox-h-"

# RFC 9110 §7.6.1: meaningful for one connection only, never relayed.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})
# The WebSocket handshake's own headers: each side of a relay makes its own.
WEBSOCKET_HANDSHAKE = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-accept", "sec-websocket-protocol",
})

Headers = list[tuple[str, str]]


class PortProbe(Wire):
    reachable: bool


def origin_form(target: str) -> bool:
    """Whether ``target`` is an origin-form request target (``/path?query``, RFC 9112
    §3.2.1): never a scheme and authority, never ``//host``, no whitespace or controls."""
    return (target.startswith("/") and not target.startswith("//")
            and all(0x21 <= ord(char) <= 0x7e for char in target))


def end_to_end(headers: Iterable[tuple[str, str]], *, websocket: bool = False) -> Headers:
    """``headers`` without the hop-by-hop ones (also those a ``Connection`` header names),
    and for a WebSocket without its handshake's; names in lower case."""
    pairs = [(name.lower(), value) for name, value in headers]
    named = {token.strip().lower() for name, value in pairs if name == "connection"
             for token in value.split(",")}
    dropped = HOP_BY_HOP | named | (WEBSOCKET_HANDSHAKE if websocket else frozenset())
    return [(name, value) for name, value in pairs if name not in dropped]


def wrap(headers: Iterable[tuple[str, str]]) -> Headers:
    """Headers to relay, each under ``FORWARDED_PREFIX``."""
    return [(FORWARDED_PREFIX + name.lower(), value) for name, value in headers]


def unwrap(headers: Iterable[tuple[str, str]]) -> Headers:
    """The relayed headers among ``headers`` (only those), their prefix removed."""
    size = len(FORWARDED_PREFIX)
    return [(name.lower()[size:], value) for name, value in headers
            if name.lower().startswith(FORWARDED_PREFIX) and len(name) > size]
