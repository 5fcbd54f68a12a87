"""``unless_disconnected``: a handler's work is cancelled when its client goes away."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from qbox.core.disconnects import unless_disconnected


def _scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}


async def test_unless_disconnected_returns_the_work_or_cancels_it() -> None:
    gone = asyncio.Event()
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    request = Request(_scope(), receive)
    assert await unless_disconnected(request, asyncio.sleep(0, "done")) == "done"
    cancelled = asyncio.Event()

    async def long_work() -> str:
        try:
            await asyncio.sleep(1000)
        finally:
            cancelled.set()
        return "never"

    waiting = asyncio.ensure_future(unless_disconnected(request, long_work()))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gone.set()
    assert await asyncio.wait_for(waiting, 5) is None and cancelled.is_set()
