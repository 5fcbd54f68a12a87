"""Images on one host: import, collect, and template builds."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pydantic

from qbox.protocol.images import (
    BUILD_EVENT,
    BuildError,
    BuildLog,
    BuildRequest,
    BuildResult,
    ImageImport,
    ImageImported,
    ImagesCollected,
    ImagesGc,
)
from qbox.server.agent_client.transport import (
    UNBOUNDED,
    Transport,
    json_events,
    long_timeout,
    parsed,
    path,
)

BuildEvent = BuildLog | BuildResult | BuildError
_CHUNK = 1024 * 1024


class ImageClient:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def import_image(self, ref: str, name: str) -> ImageImported:
        # Pulling and unpacking an image can take minutes.
        return parsed(ImageImported, await self._transport.call(
            "POST", "/images", body=ImageImport(ref=ref, name=name), timeout=1800))

    async def collect(self, keep: list[str]) -> ImagesCollected:
        """Remove the images neither in ``keep`` nor used by a sandbox there."""
        return parsed(ImagesCollected, await self._transport.call(
            "POST", "/images/gc", body=ImagesGc(keep=keep), timeout=600))

    async def put_build_context(self, context_id: str, sha256: str, data: bytes) -> None:
        """Send a Dockerfile build's context (a tar) before the build that names it."""

        async def chunks() -> AsyncGenerator[bytes, None]:
            view = memoryview(data)
            for start in range(0, len(view), _CHUNK):
                yield bytes(view[start:start + _CHUNK])

        request = self._transport.request(
            "PUT", path("build-contexts", context_id), long=True, params={"sha256": sha256},
            content=chunks(), headers={"Content-Type": "application/x-tar",
                                       "Content-Length": str(len(data))},
            timeout=long_timeout(1800))
        response = await self._transport.send(request, long=True)
        await response.aclose()

    async def build(self, request: BuildRequest) -> AsyncGenerator[BuildEvent, None]:
        """A template build's events (``log``, then ``result`` or ``error``); closing the
        iterator cancels the build. Errors before the first event are raised."""
        # No read timeout: a step may be silent for as long as it likes.
        response = await self._transport.streamed(self._transport.request(
            "POST", "/builds", long=True, json=request.wire(),
            headers={"Accept": "application/x-ndjson"}, timeout=UNBOUNDED))
        return _build_events(json_events(response))


async def _build_events(lines: AsyncGenerator[object, None]) -> AsyncGenerator[BuildEvent, None]:
    """The protocol's events; a line that is none of them is skipped."""
    try:
        async for line in lines:
            try:
                yield BUILD_EVENT.validate_python(line)
            except pydantic.ValidationError:
                continue
    finally:
        await lines.aclose()
