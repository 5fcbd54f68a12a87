"""A real WebSocket server on 127.0.0.1 playing the control plane's shell endpoint (WIRE_PROTOCOL §6).

Each test gives it a ``script`` that talks to the client's connection; the
upgrade requests it saw and the frames the script collected are kept for
assertions. ``refuse(status, code, message)`` answers the next upgrades with the
JSON error envelope instead, as the server does before accepting.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

Script = Callable[["FakeShellServer", ServerConnection], None]
PREFIX = "/prefix"


@dataclass(frozen=True)
class Upgrade:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names


def collect(server: FakeShellServer, ws: ServerConnection) -> None:
    """Record every frame until the client closes."""
    try:
        for message in ws:
            server.frames.put(message)
    except ConnectionClosed:
        pass


class FakeShellServer:
    def __init__(self, server: Server) -> None:
        self._server = server
        self.port: int = server.socket.getsockname()[1]
        self.upgrades: list[Upgrade] = []
        self.frames: queue.Queue[str | bytes] = queue.Queue()
        self.client_close: queue.Queue[tuple[int, str] | None] = queue.Queue()  # its close frame, per connection
        self.script: Script = collect
        self._refusal: Response | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def refuse(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        self._refusal = Response(status, HTTPStatus(status).phrase, headers, body)

    def next_frame(self, timeout: float = 5) -> str | bytes:
        return self.frames.get(timeout=timeout)

    def next_json(self, timeout: float = 5) -> object:
        frame = self.next_frame(timeout)
        assert isinstance(frame, str), frame
        return json.loads(frame)

    def _process_request(self, _ws: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        headers = {name.lower(): value for name, value in request.headers.raw_items()}
        self.upgrades.append(Upgrade(parts.path, dict(parse_qsl(parts.query)), headers))
        return self._refusal

    def _handle(self, ws: ServerConnection) -> None:
        try:
            self.script(self, ws)
        finally:
            received = ws.protocol.close_rcvd
            self.client_close.put(None if received is None else (received.code, received.reason))


@contextmanager
def running_shell_server() -> Iterator[FakeShellServer]:
    holder: list[FakeShellServer] = []

    def handle(ws: ServerConnection) -> None:
        holder[0]._handle(ws)

    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        return holder[0]._process_request(ws, request)

    with serve(handle, "127.0.0.1", 0, process_request=process_request) as server:
        holder.append(FakeShellServer(server))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield holder[0]
        finally:
            server.shutdown()
            thread.join(timeout=10)
