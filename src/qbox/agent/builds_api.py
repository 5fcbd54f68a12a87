"""The agent's build route (docs/agent-protocol.md, "Builds"): a thin handler over ``BuildJob``.

The answer is a stream: one JSON object per line while the build runs,
ending with its result or error. Closing the connection cancels the build.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from qbox.agent.command_stream import ndjson_response
from qbox.agent.images.base_image import machine_cache_dir
from qbox.agent.images.build import BuildJob
from qbox.agent.images.dockerfile_build import receive_context
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
                       policy=policy,
                       insecure_registries=frozenset(agent.settings.insecure_registries))
        # Never the request itself: it may carry registry credentials.
        log.info("building template %s from %s (%d steps) in %s", body.name,
                 body.ref or "a Dockerfile", len(body.steps), job.sandbox_id)
        return ndjson_response(_typed(job.events()))

    @router.put("/build-contexts/{context_id}", status_code=204)
    async def put_context(context_id: str, sha256: str, request: Request) -> Response:
        """A Dockerfile build's context (a tar), streamed before its ``POST /builds``."""
        agent = request.app.state.agent
        await receive_context(agent.settings.data_dir, context_id, sha256, request.stream())
        return Response(status_code=204)

    return router
