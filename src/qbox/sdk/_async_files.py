"""``sandbox.files`` for ``AsyncSandbox``: the same surface as ``_files``, awaited."""

from __future__ import annotations

import builtins
from typing import Literal, overload

from qbox.sdk import _file_ops as ops
from qbox.sdk._file_models import FileEntry, FileStat
from qbox.sdk._file_transfer import AsyncProgressCallback, DownloadSink, FileData, LocalPath, Progress, request_body
from qbox.sdk._steps import settle
from qbox.sdk._transport import AsyncByteStream, AsyncConnection


class AsyncFiles:
    """Files in one sandbox. Paths are absolute, or relative to the sandbox user's home."""

    def __init__(self, connection: AsyncConnection, sandbox_id: str) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id

    @overload
    async def read(self, path: str, format: Literal["text"] = "text") -> str: ...

    @overload
    async def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    @overload
    async def read(self, path: str, format: Literal["stream"]) -> AsyncByteStream: ...

    async def read(
        self, path: str, format: Literal["text", "bytes", "stream"] = "text"
    ) -> str | bytes | AsyncByteStream:
        """The file's content: UTF-8 ``text`` (``FileEncodingError`` if it is not), ``bytes``,
        or a ``stream``: an async iterator of byte chunks that holds no more than one chunk in
        memory (exhaust or ``aclose()`` it; no timeout applies while reading it)."""
        api = self._conn.api
        if format == "text":
            return await self._conn.run(ops.read_text(api, self._sandbox_id, path))
        if format == "bytes":
            return await self._conn.run(ops.read_bytes(api, self._sandbox_id, path))
        if format == "stream":
            stream: AsyncByteStream = await self._conn.run(ops.open_read(api, self._sandbox_id, path))
            return stream
        raise ValueError(f"format must be 'text', 'bytes' or 'stream', not {format!r}")

    async def write(
        self,
        path: str,
        data: FileData,
        *,
        mode: int = ops.DEFAULT_FILE_MODE,
        create_parents: bool = True,
        on_progress: AsyncProgressCallback | None = None,
    ) -> None:
        """Create or overwrite ``path`` with ``data``: text (as UTF-8), bytes, or a binary file
        object, which is streamed from where it stands, never read whole. Missing parent
        directories are made unless ``create_parents=False``."""
        body = request_body(data, on_progress)
        await self._conn.run(
            ops.write(self._conn.api, self._sandbox_id, path, body, mode=mode, create_parents=create_parents)
        )

    async def append(
        self,
        path: str,
        data: FileData,
        *,
        mode: int = ops.DEFAULT_FILE_MODE,
        on_progress: AsyncProgressCallback | None = None,
    ) -> None:
        """Add ``data`` to the end of ``path`` in one request; a missing file is created with
        ``mode``, an existing one keeps its own."""
        body = request_body(data, on_progress)
        await self._conn.run(ops.write(self._conn.api, self._sandbox_id, path, body, mode=mode, append=True))

    async def list(self, path: str, depth: int | None = 1) -> builtins.list[FileEntry]:
        """The entries of directory ``path``. ``depth`` > 1 also lists subdirectories (each followed
        by its entries) that many levels down; ``None`` has no limit. Symlinks are never entered."""
        return await self._conn.run(ops.list_dir(self._conn.api, self._sandbox_id, path, depth))

    async def exists(self, path: str) -> bool:
        return await self._conn.run(ops.exists(self._conn.api, self._sandbox_id, path))

    async def stat(self, path: str) -> FileStat:
        """What there is at ``path``; a missing path gives ``exists=False`` rather than an error."""
        return await self._conn.run(ops.stat(self._conn.api, self._sandbox_id, path))

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Delete a file, or an empty directory; ``recursive=True`` deletes a directory tree."""
        await self._conn.run(ops.remove(self._conn.api, self._sandbox_id, path, recursive=recursive))

    async def mkdir(self, path: str, *, mode: int = ops.DEFAULT_DIR_MODE, parents: bool = True) -> None:
        await self._conn.run(ops.mkdir(self._conn.api, self._sandbox_id, path, mode=mode, parents=parents))

    async def rename(self, src: str, dst: str) -> None:
        await self._conn.run(ops.rename(self._conn.api, self._sandbox_id, src, dst))

    async def download(
        self, remote: str, local_path: LocalPath, *, on_progress: AsyncProgressCallback | None = None
    ) -> None:
        """Copy ``remote`` to ``local_path`` chunk by chunk, with no timeout. ``on_progress(done,
        total)`` hears each chunk (total is None when the server does not say)."""
        stream: AsyncByteStream = await self._conn.run(ops.open_read(self._conn.api, self._sandbox_id, remote))
        progress = Progress(stream.length, on_progress)
        async with stream:
            with DownloadSink(local_path) as sink:
                await settle(progress(0))
                async for chunk in stream:
                    sink.write(chunk)
                    await settle(progress(len(chunk)))

    async def upload(
        self,
        local_path: LocalPath,
        remote: str,
        *,
        mode: int = ops.DEFAULT_FILE_MODE,
        create_parents: bool = True,
        on_progress: AsyncProgressCallback | None = None,
    ) -> None:
        """Copy the local file ``local_path`` to ``remote``, streamed from disk (off the event loop)."""
        with open(local_path, "rb") as source:
            await self.write(remote, source, mode=mode, create_parents=create_parents, on_progress=on_progress)

    def __repr__(self) -> str:
        return f"AsyncFiles(sandbox_id={self._sandbox_id!r})"
