"""A command's output read from an offset, or followed as NDJSON (docs/agent-protocol.md).

Without offsets, ``…/logs`` answers what the published client polls: the
complete cumulative ``{stdout, stderr}``. With ``offset`` (both streams) or
``stdoutOffset``/``stderrOffset`` (character offsets) it answers the text
from there on, and where to continue (``stdoutNext``/``stderrNext``).
``follow=true`` streams ``{"type": "stdout"|"stderr", "data"}`` lines as
output arrives, then one ``{"type": "exit", …}`` line.

Answers that carry output (these and /exec's) are JSON written as it is read
from the spool, a chunk at a time: 16 MiB of output is never one string here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qbox.agent.output import OutputSpool
from qbox.agent.processes import ExecResult, ProcessRecord
from qbox.protocol.processes import LogOffsets
from qbox.protocol.wire import Wire, ndjson_line

NDJSON = "application/x-ndjson"
_NO_STORE = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class LogsQuery:
    """The query of ``…/logs``: the protocol's ``LogOffsets``, and ``follow``."""

    def __init__(self, offset: int | None = Query(None, ge=0),
                 stdout_offset: int | None = Query(None, alias="stdoutOffset", ge=0),
                 stderr_offset: int | None = Query(None, alias="stderrOffset", ge=0),
                 follow: bool = Query(False)) -> None:
        self.offsets = LogOffsets(offset=offset, stdout_offset=stdout_offset,
                                  stderr_offset=stderr_offset)
        self.follow = follow


# A JSON object's members in order: plain values, or a spool's text from one character
# offset to another (both fixed when the answer starts, so the numbers beside it agree).
Member = tuple[str, Any] | tuple[str, OutputSpool, int, int]


def _json_object(members: list[Member]) -> Iterator[bytes]:
    for index, member in enumerate(members):
        yield (b"{" if index == 0 else b",") + json.dumps(member[0]).encode() + b":"
        if len(member) == 4:
            _, spool, start, end = member
            yield b'"'
            for chunk in spool.chunks(start, end):
                yield json.dumps(chunk, ensure_ascii=False)[1:-1].encode()
            yield b'"'
        else:
            yield json.dumps(member[1], ensure_ascii=False).encode()
    yield b"}" if members else b"{}"


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)  # reading 16 MiB must not hold up everyone else


class JsonStream(StreamingResponse):
    """A JSON answer written while it is read; ``done`` runs once it is sent or the
    client has gone (releases an /exec's spool), whatever happened."""

    def __init__(self, members: list[Member], done: Callable[[], None] | None = None) -> None:
        super().__init__(_aiter(_json_object(members)), media_type="application/json",
                         headers={"Cache-Control": "no-store"})
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._done is not None:
                self._done()


def logs_answer(record: ProcessRecord, offsets: LogOffsets) -> JsonStream:
    """A ``CommandLogs`` body."""
    out, err = record.stdout, record.stderr
    if not offsets.given:
        return JsonStream([("stdout", out, 0, len(out)), ("stderr", err, 0, len(err))])
    out_end, err_end = max(len(out), offsets.stdout_from), max(len(err), offsets.stderr_from)
    return JsonStream([("stdout", out, offsets.stdout_from, out_end),
                       ("stderr", err, offsets.stderr_from, err_end),
                       ("stdoutNext", out_end), ("stderrNext", err_end)])


def exec_answer(result: ExecResult) -> JsonStream:
    """An ``ExecResult`` body (protocol.processes), its output read from the spool."""
    record = result.record
    out, err = record.stdout, record.stderr
    members: list[Member] = [("stdout", out, 0, len(out)), ("stderr", err, 0, len(err)),
                             ("exitCode", record.exit_code), ("timedOut", result.timed_out)]
    if record.oom_killed:  # only then: the public /exec answer relays this shape
        members.append(("oomKilled", True))
    return JsonStream(members, result.release)


async def _lines(events: AsyncIterator[Wire]) -> AsyncIterator[bytes]:
    async for event in events:
        yield ndjson_line(event)


def ndjson_response(events: AsyncIterator[Wire]) -> StreamingResponse:
    """Protocol events, one JSON object a line."""
    return StreamingResponse(_lines(events), media_type=NDJSON, headers=_NO_STORE)
