"""An agent's streamed answer relayed to the client, its agent call closed however it ends.

Starlette stops a streamed answer when its client goes away, but a stream
cancelled before its first chunk never starts its generator, so no ``finally``
of it runs: the agent call (a pooled connection, and the agent's work behind
it) would stay open. ``RelayResponse`` closes the call after the response,
whatever happened to it. Closing the call is what tells the agent to stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qbox.server.agent_client import Relayed

NO_STORE = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class RelayResponse(StreamingResponse):
    """An agent's answer streamed on (``body``: its chunks as they are, or made from them);
    the agent call is closed however the response ends."""

    def __init__(self, relayed: Relayed, media_type: str,
                 body: AsyncIterable[bytes] | None = None) -> None:
        super().__init__(relayed.chunks if body is None else body, media_type=media_type,
                         headers=NO_STORE)
        self._relayed = relayed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._relayed.close()
