"""A command's cumulative output on one stream: spooled to disk, decoded, capped, never shrinking.

Clients poll the whole text and take ``text[previous_len:]`` as the new part
(WIRE_PROTOCOL.md §4.3), so the text only ever grows: past the cap the tail
is dropped and one marker line says so, rather than a ring buffer that would
drop the head. Followers (``follow=true``) read from a character offset and
``wait_for_more`` between reads.

The text lives in a file in the sandbox's spool directory, on the sandbox's
own disk where it has one, so a command's output counts against the
sandbox's disk quota rather than the agent's memory. The agent keeps a few
counters and one checkpoint per ``CHECKPOINT_BYTES`` that maps character
offsets to byte offsets; a descriptor only while the stream is open (finished
records, up to a thousand a sandbox, must not exhaust the agent's file
limit), so each read opens the file. Reads ``pread`` at most
``READ_CHUNK_CHARS`` characters' worth: no read builds the whole text either.
The file is removed when the spool is released; what a dead agent left is
removed with its sandbox (or when a new agent takes the sandbox over).
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("qbox.agent.output")

DEFAULT_CAP_BYTES = 16 * 1024 * 1024
# A character-to-byte checkpoint at least this often: a read starts at most this far back.
CHECKPOINT_BYTES = 64 * 1024
# How much text one read hands out (a chunk of a streamed answer, one follow event).
READ_CHUNK_CHARS = 64 * 1024
# One pread: up to 4 bytes a character, so a whole chunk's worth.
_PREAD_BYTES = 4 * READ_CHUNK_CHARS
DISK_FULL_MARKER = "\n[qbox: output truncated: the sandbox's disk is full]\n"


def truncation_marker(cap_bytes: int) -> str:
    size = (f"{cap_bytes // (1024 * 1024)} MiB" if cap_bytes % (1024 * 1024) == 0
            else f"{cap_bytes} bytes")
    return f"\n[qbox: output truncated: this stream exceeded {size}]\n"


class OutputSpool:
    """One stream's text in a file under ``directory`` (the system's temp dir when None:
    tests)."""

    def __init__(self, directory: Path | None = None, cap_bytes: int = DEFAULT_CAP_BYTES) -> None:
        self.cap_bytes = cap_bytes
        fd, path = tempfile.mkstemp(prefix="out-", dir=directory)  # 0600, not inherited
        self._fd: int | None = fd  # open for writing until the stream ends
        self.path = Path(path)
        # Incremental: a multi-byte character split across two reads is
        # decoded whole, not as two replacement characters.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._bytes_in = 0  # raw bytes taken from the command (what the cap counts)
        self._size = 0  # UTF-8 bytes in the file
        self._chars = 0  # characters in the file
        # (characters, bytes) at character boundaries, ascending: where reads start.
        self._marks_chars = [0]
        self._marks_bytes = [0]
        # The marker line after the file's text, once truncated (kept in memory: it is short).
        self._suffix = ""
        self.truncated = False
        self.closed = False
        self.released = False
        # Set (and dropped) whenever the text grows or the stream ends: wakes followers.
        self._grown: asyncio.Event | None = None

    @property
    def bytes_kept(self) -> int:
        return self._bytes_in

    def feed(self, data: bytes) -> None:
        if self.truncated or self.closed or not data:
            return
        room = self.cap_bytes - self._bytes_in
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self._bytes_in += len(data)
        self._append(self._decoder.decode(data, final=self.truncated))
        if self.truncated and not self._suffix:
            self._end_with(truncation_marker(self.cap_bytes))

    def close(self) -> None:
        """End of stream: flush an incomplete trailing character as U+FFFD."""
        if not self.closed and not self.truncated:
            self._append(self._decoder.decode(b"", final=True))
        self.closed = True
        self._close_fd()
        self._wake()

    def release(self) -> None:
        """Give the space back (the command was reaped, or its sandbox ended). Reads
        from here on find nothing; a follower waiting for more is woken."""
        if self.released:
            return
        self.released = self.closed = True
        self._close_fd()
        self.path.unlink(missing_ok=True)
        self._wake()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, text: str) -> None:
        if not text or self._fd is None:
            return
        data = text.encode()
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], self._size + written)
        except OSError as exc:
            # The sandbox's disk is full (or gone): what did not fit is dropped,
            # so the file holds whole characters only.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("spooling output failed: %s", exc)
            os.ftruncate(self._fd, self._size)
            self.truncated = True
            self._end_with(DISK_FULL_MARKER)
            return
        self._size += len(data)
        self._chars += len(text)
        if self._size - self._marks_bytes[-1] >= CHECKPOINT_BYTES:
            self._marks_chars.append(self._chars)
            self._marks_bytes.append(self._size)
        self._wake()

    def _end_with(self, marker: str) -> None:
        self._suffix = marker
        self._wake()

    def _wake(self) -> None:
        if self._grown is not None:
            self._grown.set()
            self._grown = None

    async def wait_for_more(self, seen: int) -> None:
        """Return once the text is longer than ``seen`` characters, or the stream ended."""
        while len(self) <= seen and not self.closed:
            if self._grown is None:
                self._grown = asyncio.Event()
            await self._grown.wait()

    def read(self, offset: int, limit: int = READ_CHUNK_CHARS) -> str:
        """At most ``limit`` characters of the text from character ``offset`` on."""
        offset = max(offset, 0)
        if self.released or limit <= 0 or offset >= len(self):
            return ""
        if offset >= self._chars:
            start = offset - self._chars
            return self._suffix[start:start + limit]
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return ""  # removed with its sandbox meanwhile
        try:
            return self._read(fd, offset, limit)
        finally:
            os.close(fd)

    def _read(self, fd: int, offset: int, limit: int) -> str:
        index = bisect.bisect_right(self._marks_chars, offset) - 1
        skip = offset - self._marks_chars[index]
        position = self._marks_bytes[index]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        parts: list[str] = []
        wanted = limit
        while wanted > 0 and position < self._size:
            chunk = os.pread(fd, min(self._size - position, _PREAD_BYTES), position)
            if not chunk:
                break
            position += len(chunk)
            text = decoder.decode(chunk, final=position >= self._size)
            if skip:
                dropped = min(skip, len(text))
                text, skip = text[dropped:], skip - dropped
            parts.append(text[:wanted])
            wanted -= len(parts[-1])
        if wanted > 0 and position >= self._size:
            parts.append(self._suffix[:wanted])
        return "".join(parts)

    def chunks(self, offset: int, end: int | None = None) -> Iterator[str]:
        """The text from ``offset`` to ``end`` (the current end when None), a chunk at a
        time; ends early if the spool is released meanwhile."""
        end = len(self) if end is None else end
        while offset < end and (piece := self.read(offset, min(READ_CHUNK_CHARS, end - offset))):
            offset += len(piece)
            yield piece

    def text_from(self, offset: int) -> str:
        """The whole text from character ``offset`` on (tests and small reads; answers stream)."""
        return "".join(self.chunks(offset))

    def text(self) -> str:
        return self.text_from(0)

    def __len__(self) -> int:
        return self._chars + len(self._suffix)
