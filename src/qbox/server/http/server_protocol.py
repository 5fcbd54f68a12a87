"""uvicorn's HTTP/1.1 protocol (httptools, uvicorn[standard]) with a bounded head and the error envelope.

Before the app sees a request the HTTP server itself may refuse it (a
malformed request line, a URL over httptools' 64 KiB), and uvicorn answers
those with a plain-text 400. Here they get the envelope like every other
error. The head (request line and headers) is bounded too: httptools buffers
a header whole however long it is, so bytes are counted as they arrive and,
past the limit, the request is answered and the connection closed.

Closing at once would lose that answer now and then: a socket closed with
unread input sends a reset, and a reset that reaches the client before it
has read the answer throws the answer away. So the server half-closes
instead and discards what still arrives, for ``LINGER_SECONDS`` at most
(Apache's "lingering close").
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from qbox.core.asgi import new_request_id
from qbox.core.errors import ValidationError

# How long a refused connection's further input is read and dropped before it is closed.
LINGER_SECONDS = 2.0


def envelope_400(message: str) -> bytes:
    """A whole HTTP/1.1 400 response carrying the error envelope (the connection closes after it)."""
    error = ValidationError.for_fields({"request": message}, message)
    body = json.dumps(error.to_wire(), separators=(",", ":")).encode()
    head = (f"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"x-request-id: {new_request_id()}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


class EnvelopeProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    _in_head = True
    _head_bytes = 0
    _problem = ""
    _lingering = False

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the answer is sent; what the client still sends is dropped unread
        if not self._in_head:
            super().data_received(data)
            return
        # A read may hold the head and much of the body: the parser takes what the head may
        # still be, and the rest only once it has seen the head end within that.
        room = self.max_head_bytes - self._head_bytes
        self._head_bytes += min(len(data), room)
        super().data_received(data[:room])
        if len(data) <= room or self.transport.is_closing() or self._lingering:
            return
        if self._in_head:
            self._problem = f"request line and headers over {self.max_head_bytes} bytes"
            self.send_400_response("")
            return
        super().data_received(data[room:])

    def on_headers_complete(self) -> None:
        self._in_head = False
        # httptools gives the app only the path of an absolute-form target (``GET http://x/p``);
        # the raw target lets the preview proxy refuse one (http/preview.py).
        self.scope.setdefault("extensions", {})["qbox.request_target"] = {"target": bytes(self.url)}
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def send_400_response(self, msg: str) -> None:
        self.transport.write(envelope_400(self._problem or f"invalid HTTP request ({msg.rstrip('.') or 'unparsable'})"))
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()  # the client has sent all it will: nothing to wait for
            return
        super().eof_received()


def http_protocol(max_head_bytes: int) -> type[EnvelopeProtocol]:
    """The protocol class for ``uvicorn.Config(http=…)`` with this head limit."""
    return type("EnvelopeProtocol", (EnvelopeProtocol,), {"max_head_bytes": max_head_bytes})
