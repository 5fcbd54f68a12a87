"""``AsyncShell``: the surface of ``Shell``, awaited, over ``websockets.asyncio``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from qbox.sdk import _shell_ops as ops
from qbox.sdk._api import Api
from qbox.sdk._config import ConnectionConfig, resolve


async def open_shell(
    api: Api, sandbox_id: str, cols: int, rows: int, command: str | None, user: str | None
) -> AsyncShell:
    target = ops.shell_target(api, sandbox_id, cols, rows, command, user)
    try:
        websocket = await connect(
            target.url,
            additional_headers=target.headers,
            user_agent_header=target.user_agent,
            open_timeout=target.open_timeout,
            max_size=ops.MAX_MESSAGE_BYTES,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is mapped to a QboxError
        ops.raise_open_error(exc, target)
    return AsyncShell(websocket)


class AsyncShell:
    """A terminal in a sandbox: ``await sb.shell()`` or ``await AsyncShell.open(sandbox_id)``.

    ``async for chunk in shell`` gives the raw output until the shell exits.
    """

    def __init__(self, websocket: ClientConnection) -> None:
        self._ws = websocket
        self._closed = False

    @classmethod
    async def open(
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
    ) -> AsyncShell:
        """Open a ``cols``×``rows`` terminal running the login shell of ``user`` (default ``user``),
        or ``command`` in it. A refusal raises its ``QboxError`` (e.g. ``SshDisabledError``)."""
        api = Api(resolve((config or ConnectionConfig()).merged(api_key, base_url, request_timeout)))
        return await open_shell(api, sandbox_id, cols, rows, command, user)

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

    async def send(self, data: str | bytes) -> None:
        """Type ``data``: text goes as an ``input`` message, bytes as raw input."""
        await self._send(ops.input_frame(data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(ops.resize_frame(cols, rows))

    async def _send(self, frame: str | bytes) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed:
            raise ops.closed_error(self.close_code, self.close_reason) from None

    async def recv(self, timeout: float | None = None) -> bytes | None:
        """The next chunk of output; None when ``timeout`` seconds pass first or the shell has closed."""
        if self._closed:
            return None
        try:
            async with asyncio.timeout(timeout):  # cancelling recv() loses nothing
                return ops.output_bytes(await self._ws.recv())
        except TimeoutError:
            return None
        except ConnectionClosed:
            self._closed = True
            return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.recv()) is not None:
            yield chunk

    async def wait(self, timeout: float | None = None) -> int | None:
        """Read (and drop) the output until the shell exits; its exit code, or None on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while await self.recv() is not None:
                    pass
        except TimeoutError:
            return None
        return self.exit_code

    async def close(self) -> None:
        """Close the connection; the server hangs up the shell."""
        await self._ws.close()
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncShell(closed={self._closed}, exit_code={self.exit_code})"
