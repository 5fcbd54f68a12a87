"""A command's output read from an offset, or followed as NDJSON (docs/agent-protocol.md).

Without offsets, ``…/logs`` answers what the published client polls: the
complete cumulative ``{stdout, stderr}``. With ``offset`` (both streams) or
``stdoutOffset``/``stderrOffset`` (character offsets) it answers the text
from there on, and where to continue (``stdoutNext``/``stderrNext``).
``follow=true`` streams ``{"type": "stdout"|"stderr", "data"}`` lines as
output arrives, then one ``{"type": "exit", …}`` line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Query
from fastapi.responses import StreamingResponse

from qbox.agent.processes import ProcessRecord

NDJSON = "application/x-ndjson"


class LogsQuery:
    def __init__(self, offset: int | None = Query(None, ge=0),
                 stdout_offset: int | None = Query(None, alias="stdoutOffset", ge=0),
                 stderr_offset: int | None = Query(None, alias="stderrOffset", ge=0),
                 follow: bool = Query(False)) -> None:
        self.offsets_given = offset is not None or stdout_offset is not None or \
            stderr_offset is not None
        base = offset or 0
        self.stdout_from = base if stdout_offset is None else stdout_offset
        self.stderr_from = base if stderr_offset is None else stderr_offset
        self.follow = follow


def logs_json(record: ProcessRecord, query: LogsQuery) -> dict[str, Any]:
    if not query.offsets_given:
        return {"stdout": record.stdout.text(), "stderr": record.stderr.text()}
    return {"stdout": record.stdout.text_from(query.stdout_from),
            "stderr": record.stderr.text_from(query.stderr_from),
            "stdoutNext": max(len(record.stdout), query.stdout_from),
            "stderrNext": max(len(record.stderr), query.stderr_from)}


async def _lines(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield json.dumps(event, ensure_ascii=False).encode() + b"\n"


def ndjson_response(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(_lines(events), media_type=NDJSON,
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
