"""The agent's build route (docs/agent-protocol.md, "Builds"): a thin handler over ``BuildJob``.

The answer is a stream: one JSON object per line while the build runs,
ending with its result or error. Closing the connection cancels the build.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from qbox.agent.command_stream import ndjson_response
from qbox.agent.images.base_image import machine_cache_dir
from qbox.agent.images.build import BuildJob
from qbox.protocol.images import BUILD_EVENT, BuildRequest
from qbox.protocol.wire import Wire

log = logging.getLogger("qbox.agent.builds")


async def _typed(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Wire]:
    """The job's events, each checked against the protocol on its way out."""
    async for event in events:
        yield BUILD_EVENT.validate_python(event)


def builds_router() -> APIRouter:
    router = APIRouter()

    @router.post("/builds")
    async def build(body: BuildRequest, request: Request) -> StreamingResponse:
        agent = request.app.state.agent
        policy = agent.settings.build_ref_policy(machine_cache_dir() / "base-images")
        job = BuildJob(body, agent.images, agent.sandboxes, data_dir=agent.settings.data_dir,
                       policy=policy)
        # Never the request itself: it may carry registry credentials.
        log.info("building template %s from %s (%d steps) in %s", body.name, body.ref,
                 len(body.steps), job.sandbox_id)
        return ndjson_response(_typed(job.events()))

    return router
