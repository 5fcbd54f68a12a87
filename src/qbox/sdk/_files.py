"""``sandbox.files``: read, write, list and move files in a sandbox (blocking API)."""

from __future__ import annotations

import builtins
from typing import Literal, overload

from qbox.sdk import _file_ops as ops
from qbox.sdk._file_models import FileEntry, FileStat
from qbox.sdk._file_transfer import DownloadSink, FileData, LocalPath, Progress, ProgressCallback, request_body
from qbox.sdk._transport import ByteStream, Connection


class Files:
    """Files in one sandbox. Paths are absolute, or relative to the sandbox user's home."""

    def __init__(self, connection: Connection, sandbox_id: str) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id

    @overload
    def read(self, path: str, format: Literal["text"] = "text") -> str: ...

    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    @overload
    def read(self, path: str, format: Literal["stream"]) -> ByteStream: ...

    def read(self, path: str, format: Literal["text", "bytes", "stream"] = "text") -> str | bytes | ByteStream:
        """The file's content: UTF-8 ``text`` (``FileEncodingError`` if it is not), ``bytes``,
        or a ``stream`` of byte chunks that holds no more than one chunk in memory (exhaust or
        ``close()`` it; no timeout applies while reading it)."""
        api = self._conn.api
        if format == "text":
            return self._conn.run(ops.read_text(api, self._sandbox_id, path))
        if format == "bytes":
            return self._conn.run(ops.read_bytes(api, self._sandbox_id, path))
        if format == "stream":
            stream: ByteStream = self._conn.run(ops.open_read(api, self._sandbox_id, path))
            return stream
        raise ValueError(f"format must be 'text', 'bytes' or 'stream', not {format!r}")

    def write(
        self,
        path: str,
        data: FileData,
        *,
        mode: int = ops.DEFAULT_FILE_MODE,
        create_parents: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Create or overwrite ``path`` with ``data``: text (as UTF-8), bytes, or a binary file
        object, which is streamed from where it stands, never read whole. Missing parent
        directories are made unless ``create_parents=False``."""
        body = request_body(data, on_progress)
        self._conn.run(
            ops.write(self._conn.api, self._sandbox_id, path, body, mode=mode, create_parents=create_parents)
        )

    def append(
        self,
        path: str,
        data: FileData,
        *,
        mode: int = ops.DEFAULT_FILE_MODE,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Add ``data`` to the end of ``path`` in one request; a missing file is created with
        ``mode``, an existing one keeps its own."""
        body = request_body(data, on_progress)
        self._conn.run(ops.write(self._conn.api, self._sandbox_id, path, body, mode=mode, append=True))

    def list(self, path: str, depth: int | None = 1) -> builtins.list[FileEntry]:
        """The entries of directory ``path``. ``depth`` > 1 also lists subdirectories (each followed
        by its entries) that many levels down; ``None`` has no limit. Symlinks are never entered."""
        return self._conn.run(ops.list_dir(self._conn.api, self._sandbox_id, path, depth))

    def exists(self, path: str) -> bool:
        return self._conn.run(ops.exists(self._conn.api, self._sandbox_id, path))

    def stat(self, path: str) -> FileStat:
        """What there is at ``path``; a missing path gives ``exists=False`` rather than an error."""
        return self._conn.run(ops.stat(self._conn.api, self._sandbox_id, path))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Delete a file, or an empty directory; ``recursive=True`` deletes a directory tree."""
        self._conn.run(ops.remove(self._conn.api, self._sandbox_id, path, recursive=recursive))

    def mkdir(self, path: str, *, mode: int = ops.DEFAULT_DIR_MODE, parents: bool = True) -> None:
        self._conn.run(ops.mkdir(self._conn.api, self._sandbox_id, path, mode=mode, parents=parents))

    def rename(self, src: str, dst: str) -> None:
        self._conn.run(ops.rename(self._conn.api, self._sandbox_id, src, dst))

    def download(self, remote: str, local_path: LocalPath, *, on_progress: ProgressCallback | None = None) -> None:
        """Copy ``remote`` to ``local_path`` chunk by chunk, with no timeout. ``on_progress(done,
        total)`` hears each chunk (total is None when the server does not say)."""
        stream: ByteStream = self._conn.run(ops.open_read(self._conn.api, self._sandbox_id, remote))
        progress = Progress(stream.length, on_progress)
        with stream, DownloadSink(local_path) as sink:
            progress(0)
            for chunk in stream:
                sink.write(chunk)
                progress(len(chunk))

    def upload(
        self,
        local_path: LocalPath,
        remote: str,
        *,
        mode: int = ops.DEFAULT_FILE_MODE,
        create_parents: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Copy the local file ``local_path`` to ``remote``, streamed from disk."""
        with open(local_path, "rb") as source:
            self.write(remote, source, mode=mode, create_parents=create_parents, on_progress=on_progress)

    def __repr__(self) -> str:
        return f"Files(sandbox_id={self._sandbox_id!r})"
