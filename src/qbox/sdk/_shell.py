"""``Shell``: an interactive terminal in a sandbox, over a WebSocket (blocking API).

Needs the ``shell`` extra (``websockets``); ``Sandbox.shell`` says so when it is missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Self

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from qbox.sdk import _shell_ops as ops
from qbox.sdk._api import Api
from qbox.sdk._config import ConnectionConfig, resolve


def open_shell(api: Api, sandbox_id: str, cols: int, rows: int, command: str | None, user: str | None) -> Shell:
    target = ops.shell_target(api, sandbox_id, cols, rows, command, user)
    try:
        # Entered, not kept as ``with``: the Shell owns the connection. Entering is also what
        # websockets >= 17.1 wants instead of a bare connect() (and what its future default needs).
        websocket = connect(
            target.url,
            additional_headers=target.headers,
            user_agent_header=target.user_agent,
            open_timeout=target.open_timeout,
            max_size=ops.MAX_MESSAGE_BYTES,
        ).__enter__()
    except Exception as exc:  # noqa: BLE001 - every failure is mapped to a QboxError
        ops.raise_open_error(exc, target)
    return Shell(websocket)


class Shell:
    """A terminal in a sandbox: ``sb.shell()`` or ``Shell.open(sandbox_id)``.

    ``send`` types, ``resize`` sets the window size, iterating (or ``recv``)
    gives the raw terminal output until the shell exits; ``exit_code`` is its
    exit status then. As a context manager it closes the connection on exit,
    which hangs up the shell.
    """

    def __init__(self, websocket: ClientConnection) -> None:
        self._ws = websocket
        self._closed = False

    @classmethod
    def open(
        cls,
        sandbox_id: str,
        cols: int = 80,
        rows: int = 24,
        *,
        command: str | None = None,
        user: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Shell:
        """Open a ``cols``×``rows`` terminal running the login shell of ``user`` (default ``user``),
        or ``command`` in it. A refusal raises its ``QboxError`` (e.g. ``SshDisabledError``)."""
        api = Api(resolve((config or ConnectionConfig()).merged(api_key, base_url, request_timeout)))
        return open_shell(api, sandbox_id, cols, rows, command, user)

    @property
    def exit_code(self) -> int | None:
        """The shell's exit status once it has exited; None before, or if the connection broke."""
        return ops.exit_code(self._ws.protocol.close_rcvd)

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code once closed (1000 when the shell exited)."""
        return self._ws.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.protocol.close_reason

    def send(self, data: str | bytes) -> None:
        """Type ``data``: text goes as an ``input`` message, bytes as raw input."""
        self._send(ops.input_frame(data))

    def resize(self, cols: int, rows: int) -> None:
        self._send(ops.resize_frame(cols, rows))

    def _send(self, frame: str | bytes) -> None:
        try:
            self._ws.send(frame)
        except ConnectionClosed:
            raise ops.closed_error(self.close_code, self.close_reason) from None

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next chunk of output; None when ``timeout`` seconds pass first or the shell has closed."""
        if self._closed:
            return None
        try:
            return ops.output_bytes(self._ws.recv(timeout))
        except TimeoutError:
            return None
        except ConnectionClosed:
            self._closed = True
            return None

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.recv()) is not None:
            yield chunk

    def wait(self, timeout: float | None = None) -> int | None:
        """Read (and drop) the output until the shell exits; its exit code, or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self.recv(left)
        return self.exit_code

    def close(self) -> None:
        """Close the connection; the server hangs up the shell."""
        self._ws.close()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Shell(closed={self._closed}, exit_code={self.exit_code})"
