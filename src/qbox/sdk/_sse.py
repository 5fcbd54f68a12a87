"""An incremental parser for the code-execute event stream (WIRE_PROTOCOL.md §5.1).

Bytes go in as they arrive, decoded JSON payloads come out, one per frame:

* lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (a ``\\r\\n`` split between two
  chunks is still one line break);
* a line starting with ``:`` is a comment (keep-alive);
* ``field: value`` loses one leading space of its value; only ``data`` lines
  count, and several of them in one frame are joined with ``\\n``;
* a blank line ends a frame; a frame whose data is not JSON is skipped;
* at the end of the stream (``close``) a last frame without its blank line
  still counts.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


class SseParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = ""  # an unfinished line (with a held-back trailing ``\r``)
        self._data: list[str] = []
        self._started = False

    def feed(self, chunk: bytes) -> list[Any]:
        """The payloads of the frames that ``chunk`` completes."""
        text = self._partial + self._decoder.decode(chunk)
        held = ""
        if text.endswith("\r"):
            # Perhaps the first half of ``\r\n``: decide once the next chunk shows.
            text, held = text[:-1], "\r"
        *lines, partial = _LINE_BREAK.split(self._strip_bom(text))
        self._partial = partial + held
        return self._lines(lines)

    def close(self) -> list[Any]:
        """The payloads still pending at the end of the stream."""
        text = self._strip_bom(self._partial + self._decoder.decode(b"", final=True))
        self._partial = ""
        lines = _LINE_BREAK.split(text)
        if lines[-1] == "":
            lines.pop()  # the text ended with a line break: no unfinished line
        payloads = self._lines(lines)
        payloads += self._dispatch()
        return payloads

    def _strip_bom(self, text: str) -> str:
        if not self._started and text:
            self._started = True
            return text.removeprefix(_BOM)
        return text

    def _lines(self, lines: list[str]) -> list[Any]:
        payloads: list[Any] = []
        for line in lines:
            if line == "":
                payloads += self._dispatch()
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value.removeprefix(" "))
        return payloads

    def _dispatch(self) -> list[Any]:
        if not self._data:
            return []
        data, self._data = "\n".join(self._data), []
        try:
            return [json.loads(data)]
        except ValueError:
            return []  # not JSON: skipped, as the protocol says
