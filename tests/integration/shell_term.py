"""A terminal on the shell WebSocket for tests: send keystrokes, wait for output, see the close.

Real WebSocket client (websockets' sync client, what the published SDK uses),
real server; nothing here knows how the server is built.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


def shell_url(base_url: str, sandbox_id: str, **params: Any) -> str:
    query = {"cols": 80, "rows": 24, **params}
    return (base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
            + f"/v1/sandboxes/{sandbox_id}/shell?{urlencode(query)}")


def open_socket(base_url: str, sandbox_id: str, *, key: str | None = None,
                headers: dict[str, str] | None = None, **params: Any) -> ClientConnection:
    sent = dict(headers or {})
    if key:
        sent["Authorization"] = f"Bearer {key}"
    # Entered, as websockets >= 17.1 wants; the caller closes it.
    return connect(shell_url(base_url, sandbox_id, **params), additional_headers=sent,
                   open_timeout=30, max_size=2 ** 20).__enter__()


_KEEP = 1 << 20


class Term:
    """What the user of a terminal sees: everything printed so far, and how it ended."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.text = ""
        self._seen = 0
        self._searched = 0
        self.frames = 0
        self.largest_frame = 0

    @classmethod
    def open(cls, base_url: str, sandbox_id: str, key: str, **params: Any) -> Term:
        return cls(open_socket(base_url, sandbox_id, key=key, **params))

    def __enter__(self) -> Term:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.close()

    def type(self, keys: str) -> None:
        self.ws.send(json.dumps({"type": "input", "data": keys}))

    def resize(self, cols: int, rows: int) -> None:
        self.ws.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    def _take(self, timeout: float) -> bool:
        """The frames that came within ``timeout`` into ``text``; False if none did.
        Raises ConnectionClosed at the end. After a flood (``yes``) only the last
        MiB is kept: what a terminal shows, and cheap to search."""
        chunks: list[str] = []
        try:
            wait = timeout
            while len(chunks) < 4096:
                try:
                    frame = self.ws.recv(timeout=wait)
                except TimeoutError:
                    break
                wait = 0  # then whatever else is here already
                assert isinstance(frame, bytes), f"the server sent a text frame: {frame!r}"
                self.frames += 1
                self.largest_frame = max(self.largest_frame, len(frame))
                chunks.append(frame.decode("utf-8", "replace"))
        finally:
            self.text += "".join(chunks)
            if len(self.text) > _KEEP:
                cut = len(self.text) - _KEEP
                self.text, self._seen = self.text[cut:], max(0, self._seen - cut)
                self._searched = max(0, self._searched - cut)
        return bool(chunks)

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait for ``pattern`` in output not matched before; the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        self._searched = self._seen
        while True:
            # Only what came since the last look (with room for a match across two frames):
            # after `yes`, the text is megabytes long.
            found = regex.search(self.text, max(self._seen, self._searched - 512))
            self._searched = len(self.text)
            if found:
                self._seen = found.end()
                return found
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {timeout} s; the terminal shows:\n{self.text[-3000:]}"
            try:
                self._take(min(left, 1.0))
            except ConnectionClosed:
                raise AssertionError(f"closed ({self.ws.close_code} {self.ws.close_reason!r}) before "
                                     f"{pattern!r}; the terminal shows:\n{self.text[-3000:]}") from None

    def run(self, command: str, timeout: float = 30) -> str:
        """Type ``command`` and return what it printed (between two unique markers)."""
        marker = f"M{time.monotonic_ns()}"
        # The markers are printed by the shell, never echoed as typed: "M1""23" is not "M123".
        split = f'"{marker[:3]}""{marker[3:]}"'
        self.type(f"echo {split}-begin; {command}; echo {split}-end\r")
        self.expect(f"{marker}-begin\r?\n", timeout)
        end = self.expect(f"{marker}-end", timeout)
        before = self.text[:end.start()]
        return before[before.rindex(f"{marker}-begin") + len(marker) + len("-begin"):].strip()

    def wait_closed(self, timeout: float = 30) -> tuple[int | None, str | None]:
        """Read until the server closes; its close code and reason."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._take(min(deadline - time.monotonic(), 1.0))
        except ConnectionClosed:
            return self.ws.close_code, self.ws.close_reason
        raise AssertionError(f"still open after {timeout} s; the terminal shows:\n{self.text[-3000:]}")
