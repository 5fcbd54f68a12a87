"""A command's cumulative output on one stream: decoded, capped, never shrinking.

Clients poll the whole text and take ``text[previous_len:]`` as the new part
(WIRE_PROTOCOL.md §4.3), so the buffer only ever grows: past the cap the
tail is dropped and one marker line says so, rather than a ring buffer that
would drop the head. Followers (``follow=true``) read from a character
offset and ``wait_for_more`` between reads.
"""

from __future__ import annotations

import asyncio
import codecs

DEFAULT_CAP_BYTES = 16 * 1024 * 1024


def truncation_marker(cap_bytes: int) -> str:
    size = (f"{cap_bytes // (1024 * 1024)} MiB" if cap_bytes % (1024 * 1024) == 0
            else f"{cap_bytes} bytes")
    return f"\n[qbox: output truncated: this stream exceeded {size}]\n"


class OutputBuffer:
    def __init__(self, cap_bytes: int = DEFAULT_CAP_BYTES) -> None:
        self.cap_bytes = cap_bytes
        # Incremental: a multi-byte character split across two reads is
        # decoded whole, not as two replacement characters.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._bytes = 0
        self._text_len = 0
        self.truncated = False
        self.closed = False
        # Set (and dropped) whenever the text grows or the stream ends: wakes followers.
        self._grown: asyncio.Event | None = None

    @property
    def bytes_kept(self) -> int:
        return self._bytes

    def feed(self, data: bytes) -> None:
        if self.truncated or self.closed or not data:
            return
        room = self.cap_bytes - self._bytes
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self._bytes += len(data)
        self._append(self._decoder.decode(data, final=self.truncated))
        if self.truncated:
            self._append(truncation_marker(self.cap_bytes))

    def close(self) -> None:
        """End of stream: flush an incomplete trailing character as U+FFFD."""
        if not self.closed and not self.truncated:
            self._append(self._decoder.decode(b"", final=True))
        self.closed = True
        self._wake()

    def _append(self, text: str) -> None:
        if text:
            self._parts.append(text)
            self._text_len += len(text)
            self._wake()

    def _wake(self) -> None:
        if self._grown is not None:
            self._grown.set()
            self._grown = None

    async def wait_for_more(self, seen: int) -> None:
        """Return once the text is longer than ``seen`` characters, or the stream ended."""
        while self._text_len <= seen and not self.closed:
            if self._grown is None:
                self._grown = asyncio.Event()
            await self._grown.wait()

    def text_from(self, offset: int) -> str:
        """The text from character ``offset`` on (empty past the end)."""
        return self.text()[max(offset, 0):] if offset < self._text_len else ""

    def text(self) -> str:
        if len(self._parts) > 1:
            # Join once and keep the result: polling reads stay linear overall.
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def __len__(self) -> int:
        return self._text_len
