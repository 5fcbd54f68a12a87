"""Files in a sandbox, streamed both ways: nothing here holds a whole file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from qbox.core.errors import QboxError
from qbox.protocol.files import FileEntry, FileQuery, FileStat, FileWritten, Mkdir, Rename, WriteQuery
from qbox.server.agent_client.transport import (
    TRANSFER_TIMEOUT,
    Transport,
    parsed,
    parsed_list,
    path,
    raw_chunks,
)


@dataclass
class FileStream:
    """A file being read from an agent: its size, then its bytes (close it when done)."""

    size: int
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


class FileClient:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def stat(self, sandbox_id: str, query: FileQuery) -> FileStat:
        return parsed(FileStat, await self._transport.call(
            "GET", path("sandboxes", sandbox_id, "files", "stat"), params=query))

    async def list(self, sandbox_id: str, query: FileQuery) -> list[FileEntry]:
        return parsed_list(FileEntry, await self._transport.call(
            "GET", path("sandboxes", sandbox_id, "files", "list"), params=query))

    async def read(self, sandbox_id: str, query: FileQuery) -> FileStream:
        request = self._transport.request(
            "GET", path("sandboxes", sandbox_id, "files", "content"), long=True,
            params=query.wire(), timeout=TRANSFER_TIMEOUT)
        response = await self._transport.streamed(request)
        try:
            size = int(response.headers["content-length"])
        except (KeyError, ValueError):
            await response.aclose()
            raise QboxError("host agent sent a file without its length", code="internal",
                            status=500) from None
        return FileStream(size, raw_chunks(response), response.aclose)

    async def write(self, sandbox_id: str, query: WriteQuery, content: AsyncIterator[bytes],
                    length: int | None = None) -> FileWritten:
        """``length``: the body's size when its sender announced it (the agent sees it too)."""
        headers = {"Content-Type": "application/octet-stream"}
        if length is not None:
            headers["Content-Length"] = str(length)
        request = self._transport.request(
            "PUT", path("sandboxes", sandbox_id, "files", "content"), long=True,
            params=query.wire(), content=content, headers=headers, timeout=TRANSFER_TIMEOUT)
        response = await self._transport.send(request, long=True)
        return parsed(FileWritten, response.json())

    async def remove(self, sandbox_id: str, query: FileQuery, recursive: bool) -> None:
        await self._transport.call("DELETE", path("sandboxes", sandbox_id, "files", "content"),
                                   params={**query.wire(), "recursive": recursive})

    async def mkdir(self, sandbox_id: str, request: Mkdir) -> None:
        await self._transport.call("POST", path("sandboxes", sandbox_id, "files", "mkdir"),
                                   body=request)

    async def rename(self, sandbox_id: str, request: Rename) -> None:
        await self._transport.call("POST", path("sandboxes", sandbox_id, "files", "rename"),
                                   body=request)
