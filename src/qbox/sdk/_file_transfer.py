"""The local side of file transfers: request bodies from user data, downloads to disk, progress.

Uploads never read a file object whole: it becomes an ``Upload`` that the
driver reads chunk by chunk (with Content-Length when the size is known up
front). Downloads are written chunk by chunk as they arrive.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import IO, Any, Self, TypeAlias

from qbox.sdk._steps import Body, Upload

# ``on_progress(done_bytes, total_bytes)``; total is None when nobody knows it in advance.
ProgressCallback: TypeAlias = Callable[[int, int | None], object]
AsyncProgressCallback: TypeAlias = Callable[[int, int | None], None] | Callable[[int, int | None], Awaitable[None]]
FileData: TypeAlias = str | bytes | IO[bytes]
LocalPath: TypeAlias = str | os.PathLike[str]


class Progress:
    """Counts bytes moved and reports them: called with 0 at the start, then with each chunk's size.

    It returns what the callback returned, for the async SDK to await an ``async def`` one.
    """

    def __init__(self, total: int | None, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback

    def __call__(self, size: int) -> object:
        self.done += size
        return None if self._callback is None else self._callback(self.done, self.total)


def remaining_size(source: Any) -> int | None:
    """Bytes left to read from a file object, when that can be known without reading."""
    try:
        info = os.fstat(source.fileno())
        if stat.S_ISREG(info.st_mode):
            return max(0, info.st_size - int(source.tell()))
        return None  # a pipe, socket or terminal: its size is unknowable
    except (AttributeError, OSError, ValueError):
        pass
    try:
        if source.seekable():
            start = int(source.tell())
            end = int(source.seek(0, io.SEEK_END))
            source.seek(start)
            return max(0, end - start)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def request_body(data: FileData, on_progress: ProgressCallback | None = None) -> Body:
    """A PUT body for ``data``: text as UTF-8, bytes as they are, a binary file object streamed."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        content = bytes(data)
        if on_progress is None:
            return content
        # Progress needs chunks; a BytesIO over the bytes shares their buffer.
        return Upload(io.BytesIO(content), len(content), on_chunk=Progress(len(content), on_progress))
    if isinstance(data, io.TextIOBase):
        raise TypeError("files.write needs a binary file object: open the file with 'rb'")
    if not callable(getattr(data, "read", None)):
        raise TypeError(f"files.write takes str, bytes or a binary file object, not {type(data).__name__}")
    length = remaining_size(data)
    return Upload(data, length, on_chunk=Progress(length, on_progress))


class DownloadSink:
    """Writes a download to ``local_path`` as it arrives; a failed download removes the partial file."""

    def __init__(self, local_path: LocalPath) -> None:
        self.path = os.fspath(local_path)
        self._file: IO[bytes] | None = None

    def __enter__(self) -> Self:
        self._file = open(self.path, "wb")  # closed in __exit__
        return self

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "use DownloadSink as a context manager"
        self._file.write(chunk)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
        if exc_type is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
