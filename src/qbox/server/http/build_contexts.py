"""/v1/build-contexts: upload a Docker build context (a tar or tar.gz) for a Dockerfile template.

The raw body is the archive, read to at most ``QBOX_MAX_BUILD_CONTEXT_BYTES``
(413 past it), checked (core/build_context.py: 400 for absolute names, ``..``,
links out of it, device files, too many entries) and stored for its uploader,
whose ``POST /v1/templates`` names it as ``buildContextId``; for anyone else
it does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from qbox.server.http.access import Bucket, allowed
from qbox.server.http.body import read_body
from qbox.server.http.deps import services_of
from qbox.server.http import response_models as rm
from qbox.server.http.openapi import answers
from qbox.server.principal import Principal

router = APIRouter(prefix="/v1/build-contexts")


@router.post("", status_code=201, responses=answers(201, rm.BuildContextInfo, 413))
async def upload_build_context(
    request: Request,
    principal: Principal = allowed("templates:write", Bucket.REQUESTS, audit="build_context.create"),
) -> JSONResponse:
    """The body is the context archive (``application/x-tar`` or ``application/gzip``)."""
    services = services_of(request)
    data = await read_body(request, services.ctx.settings.max_build_context_bytes)
    # Audited with the new context as its target (services/audit_notes.py).
    row = await services.dockerfile_templates.store_context(principal, data)
    return JSONResponse({"id": row.id, "sizeBytes": row.size_bytes, "sha256": row.sha256},
                        status_code=201)
