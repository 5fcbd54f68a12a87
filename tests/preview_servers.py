"""An HTTP and WebSocket test server for preview URLs, in the standard library only.

The same file runs in two places: inside a sandbox (``python3 - PORT`` with
this file's text on stdin, or ``python3 -c "$(cat)" PORT``: ``SOURCE`` is the
text to send) and on the host's loopback for unit tests (``local_server()``).
HTTP/1.1 with keep-alive; every answer says ``X-Peer-Port`` (the client's TCP
port: the same value on two answers means one kept-alive connection).

Routes (``?name=value`` parameters):

- ``/hello``: ``hello``, with a Content-Length.
- ``/echo`` (any method): JSON ``{method, target, headers: [[name, value]…],
  bodyLength, bodySha256}``; a request body may come with a Content-Length
  or chunked (one that breaks off is never answered, nor noted in ``ECHOED``).
- ``/status?code=N``: status N, ``X-Custom: yes``, two ``Set-Cookie``s,
  ``X-Bytes`` (the bytes ``caf\xc3\xa9 \xff``: UTF-8 and not), and
  hop-by-hop headers a relay must drop (``Keep-Alive``, ``Connection: X-Drop``
  naming ``X-Drop``).
- ``/stream?chunks=N&size=B&interval=S``: a chunked body of N chunks of B
  bytes (``x``), S seconds apart.
- ``/sse?events=N&interval=S``: ``text/event-stream``, ``data: {i} {time.time()}``
  every S seconds, each flushed on its own.
- ``/bytes?size=N``: N bytes of ``pattern(N)``, with a Content-Length (see
  ``pattern_sha256``), sent in 64 KiB writes.
- ``/slow?seconds=S``: waits S seconds before its head.
- ``/ws``: a WebSocket echo (text stays text, binary stays binary). It picks the
  first subprotocol offered; the text ``handshake`` is answered with the
  handshake's headers as JSON; ``close:CODE:REASON`` makes it close with that
  code and reason; a close from the client is echoed with its code and reason
  (and noted in ``CLOSES``).
- ``/ws-refuse``: an upgrade refused with 403.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The close codes and reasons ``/ws`` received from its clients, and the body lengths of
# the requests ``/echo`` answered (for a local server's tests).
CLOSES: list[tuple[int, str]] = []
ECHOED: list[int] = []
BLOCK = 64 * 1024
_UNIT = b"0123456789abcdef"


def pattern(size: int) -> Iterator[bytes]:
    """``/bytes``'s body, in blocks of at most 64 KiB."""
    block = _UNIT * (BLOCK // len(_UNIT))
    while size > 0:
        piece = block[:min(size, BLOCK)]
        size -= len(piece)
        yield piece


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(size):
        digest.update(piece)
    return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are separate writes: without TCP_NODELAY each small answer would
    # wait for the client's delayed ACK (≈40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    # -- helpers --------------------------------------------------------------

    def _params(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return parts.path, {name: values[-1] for name, values in parse_qs(parts.query).items()}

    def _head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        self.send_header("X-Peer-Port", str(self.client_address[1]))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain",
                extra: list[tuple[str, str]] | None = None) -> None:
        self._head(status, [("Content-Type", content_type),
                            ("Content-Length", str(len(body))), *(extra or [])])
        if self.command != "HEAD":
            self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _read_body(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline()
                if not line:
                    raise ConnectionError("the chunked body broke off")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(remaining, BLOCK))
            if not data:
                raise ConnectionError("the body broke off")
            remaining -= len(data)
            yield data

    # -- routes -----------------------------------------------------------------

    def _route(self) -> None:
        route, params = self._params()
        if route in ("/ws", "/ws-refuse") and \
                self.headers.get("Upgrade", "").lower() == "websocket":
            if route == "/ws-refuse":
                self._answer(403, b"no websockets here")
                return
            self._websocket()
            return
        if route == "/hello":
            self._answer(200, b"hello")
        elif route == "/echo":
            digest, length = hashlib.sha256(), 0
            for data in self._read_body():
                digest.update(data)
                length += len(data)
            ECHOED.append(length)
            body = json.dumps({"method": self.command, "target": self.path,
                               "headers": [[k, v] for k, v in self.headers.items()],
                               "bodyLength": length, "bodySha256": digest.hexdigest()})
            self._answer(200, body.encode(), "application/json")
        elif route == "/status":
            code = int(params.get("code", "200"))
            self._answer(code, f"status {code}".encode(), extra=[
                ("X-Custom", "yes"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                ("X-Bytes", "caf\xc3\xa9 \xff"),
                ("Keep-Alive", "timeout=5"), ("Connection", "X-Drop"), ("X-Drop", "1")])
        elif route == "/stream":
            chunks, size = int(params.get("chunks", "5")), int(params.get("size", "10"))
            interval = float(params.get("interval", "0"))
            self._head(200, [("Content-Type", "application/octet-stream"),
                             ("Transfer-Encoding", "chunked")])
            for index in range(chunks):
                if index and interval:
                    time.sleep(interval)
                self._chunk(b"x" * size)
            self._chunk(b"")
        elif route == "/sse":
            events, interval = int(params.get("events", "5")), float(params.get("interval", "0.2"))
            self._head(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                             ("Transfer-Encoding", "chunked")])
            for index in range(events):
                if index:
                    time.sleep(interval)
                self._chunk(f"data: {index} {time.time()}\n\n".encode())
            self._chunk(b"")
        elif route == "/bytes":
            size = int(params.get("size", "0"))
            self._head(200, [("Content-Type", "application/octet-stream"),
                             ("Content-Length", str(size))])
            if self.command != "HEAD":
                for piece in pattern(size):
                    self.wfile.write(piece)
        elif route == "/slow":
            time.sleep(float(params.get("seconds", "1")))
            self._answer(200, b"slow")
        else:
            self._answer(404, b"no such route")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _route

    # -- WebSocket --------------------------------------------------------------

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")
                   if p.strip()]
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Accept", accept)]
        if offered:
            headers.append(("Sec-WebSocket-Protocol", offered[0]))
        self._head(101, headers)
        self.wfile.flush()
        self.close_connection = True
        handshake = json.dumps([[k, v] for k, v in self.headers.items()])
        while True:
            frame = self._receive()
            if frame is None:
                return
            opcode, payload = frame
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                CLOSES.append((code, payload[2:].decode(errors="replace")))
                self._send_frame(8, payload)
                return
            if opcode == 9:
                self._send_frame(10, payload)
            elif opcode == 1:
                text = payload.decode()
                if text == "handshake":
                    self._send_frame(1, handshake.encode())
                elif text.startswith("close:"):
                    _, code, reason = text.split(":", 2)
                    self._send_frame(8, struct.pack("!H", int(code)) + reason.encode())
                    self._receive()  # the client's answering close
                    return
                else:
                    self._send_frame(1, payload)
            elif opcode == 2:
                self._send_frame(2, payload)

    def _receive(self) -> tuple[int, bytes] | None:
        """One whole message (continuations joined), or a control frame; None at EOF."""
        opcode, data = None, b""
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return None
            fin, frame_opcode = head[0] & 0x80, head[0] & 0x0F
            masked, length = head[1] & 0x80, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if masked else b"\0\0\0\0"
            payload = bytearray(self.rfile.read(length))
            for index in range(len(payload)):
                payload[index] ^= mask[index % 4]
            if frame_opcode >= 8:
                return frame_opcode, bytes(payload)
            if frame_opcode != 0:
                opcode = frame_opcode
            data += payload
            if fin:
                return opcode or 1, data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        self.wfile.write(head + payload)
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(host: str, port: int) -> None:
    Server((host, port), Handler).serve_forever()


@contextmanager
def local_server() -> Iterator[int]:
    """The server on 127.0.0.1 in a thread of this process; yields its port."""
    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def source() -> str:
    """This file's text: what a sandbox runs (``python3 -c SOURCE PORT``)."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


if __name__ == "__main__":
    serve("0.0.0.0", int(sys.argv[1]))
