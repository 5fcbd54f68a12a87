"""Cancel a request's work when its client goes away (control plane and agent).

Starlette does not cancel a plain handler when the client disconnects: an
/exec whose caller is gone would keep its command, and the connections
carrying it, for as long as the command runs. ``unless_disconnected`` runs
the work beside a watch on the request's receive channel and cancels it on
``http.disconnect``. (Streamed answers need no help: Starlette stops them.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

T = TypeVar("T")

# What a handler answers once its client is gone (nobody reads it; nginx's code for it).
CLIENT_CLOSED_REQUEST = 499


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None once the client has gone (``work`` is then cancelled
    and awaited). Call it after the request's body has been read."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        return None
    return task.result()


def gone() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)
