"""/v1/sandboxes/{id}/files, /file, /stat, /download: files in a sandbox (WIRE_PROTOCOL §4.4).

Paths travel in the ``path`` query parameter (mkdir and rename: JSON), and
are sandbox paths: relative ones are relative to the user's home. Contents
are raw bytes both ways, streamed. ``user`` (our extension) acts as another
user of the sandbox, e.g. ``root``; by default it is the sandbox's user.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field, field_validator

from qbox.core.errors import ValidationError
from qbox.protocol.files import Mkdir, Rename
from qbox.server.http import views
from qbox.server.http.body import lift_body_limit
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.auditing import describe
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import media, raw_body, request_body
from qbox.server.http.schemas import _Body, _no_nul
from qbox.server.principal import Principal
from qbox.server.services.files import FileWrite

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}")

# Optional here so that access is checked before a missing path is reported.
_PATH = Query(None, max_length=4096, description="A path inside the sandbox (required).")
_USER = Query(None, max_length=64, description="Act as this user of the sandbox (default: its user).")


class MkdirBody(_Body):
    path: str = Field(min_length=1, max_length=4096)
    # The numeric permission value as a JSON integer: 493 is 0o755.
    mode: int = Field(default=0o755, ge=0, le=0o7777)
    parents: bool = True
    user: str | None = Field(default=None, max_length=64)

    _path_ok = field_validator("path")(lambda v: _no_nul(v, "path"))

    def to_agent(self) -> Mkdir:
        return Mkdir(path=self.path, mode=self.mode, parents=self.parents, user=self.user)


class RenameBody(_Body):
    src: str = Field(min_length=1, max_length=4096)
    dst: str = Field(min_length=1, max_length=4096)
    user: str | None = Field(default=None, max_length=64)

    _src_ok = field_validator("src")(lambda v: _no_nul(v, "src"))
    _dst_ok = field_validator("dst")(lambda v: _no_nul(v, "dst"))

    def to_agent(self) -> Rename:
        return Rename(src=self.src, dst=self.dst, user=self.user)


def declared_length(request: Request) -> int | None:
    """The body's declared length (None: chunked), refused unless a number."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise ValidationError.for_fields({"Content-Length": "must be a number of bytes"})
    return int(declared)


async def _download(request: Request, sandbox_id: str, path: str | None, user: str | None,
                    principal: Principal) -> StreamingResponse:
    stream = await services_of(request).files.read(principal, sandbox_id, path, user)
    return StreamingResponse(stream.chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(stream.size)})


@router.get("/download", responses=media(200, "application/octet-stream"))
async def download(sandbox_id: str, request: Request, path: str | None = _PATH, user: str | None = _USER,
                   principal: Principal = allowed("files:read", Bucket.REQUESTS)) -> StreamingResponse:
    return await _download(request, sandbox_id, path, user, principal)


@router.get("/file", responses=media(200, "application/octet-stream"))
async def read_file(sandbox_id: str, request: Request, path: str | None = _PATH, user: str | None = _USER,
                    principal: Principal = allowed("files:read", Bucket.REQUESTS)) -> StreamingResponse:
    """The same bytes as /download (the published client reads through /download)."""
    return await _download(request, sandbox_id, path, user, principal)


@router.put("/file", status_code=204, openapi_extra=raw_body())
async def write_file(
    sandbox_id: str,
    request: Request,
    path: str | None = _PATH,
    mode: str = Query("644", max_length=8, description="Octal, e.g. 644 or 600."),
    create_parents: bool = Query(True, alias="createParents"),
    append: bool = Query(False, description="Add to the end instead of replacing (qbox)."),
    user: str | None = _USER,
    principal: Principal = allowed("files:write", Bucket.REQUESTS, audit="file.write"),
) -> Response:
    describe(request, f"{'append' if append else 'write'} {path}")
    how = FileWrite(mode=mode, create_parents=create_parents, append=append, user=user,
                    length=declared_length(request))
    lift_body_limit(request)  # streamed: the files service holds it to QBOX_MAX_FILE_BYTES
    await services_of(request).files.write(principal, sandbox_id, path, request.stream(), how)
    return Response(status_code=204)


@router.delete("/file", status_code=204)
async def remove_file(
    sandbox_id: str,
    request: Request,
    path: str | None = _PATH,
    recursive: bool = False,
    user: str | None = _USER,
    principal: Principal = allowed("files:write", Bucket.REQUESTS, audit="file.delete"),
) -> Response:
    describe(request, f"{path}{' (recursive)' if recursive else ''}")
    await services_of(request).files.remove(principal, sandbox_id, path, recursive, user)
    return Response(status_code=204)


@router.get("/files")
async def list_files(sandbox_id: str, request: Request, path: str | None = _PATH,
                     user: str | None = _USER,
                     principal: Principal = allowed("files:read", Bucket.REQUESTS)) -> list[dict[str, Any]]:
    entries = await services_of(request).files.list(principal, sandbox_id, path, user)
    return [views.file_entry(entry) for entry in entries]


@router.get("/stat")
async def stat(sandbox_id: str, request: Request, path: str | None = _PATH, user: str | None = _USER,
               principal: Principal = allowed("files:read", Bucket.REQUESTS)) -> dict[str, Any]:
    return views.file_stat(await services_of(request).files.stat(principal, sandbox_id, path, user))


@router.post("/files/mkdir", status_code=204, openapi_extra=request_body(MkdirBody))
async def make_dir(sandbox_id: str, request: Request,
                   principal: Principal = allowed("files:write", Bucket.REQUESTS, audit="file.mkdir")) -> Response:
    body = await json_body(request, MkdirBody)
    describe(request, body.path)
    await services_of(request).files.mkdir(principal, sandbox_id, body.to_agent())
    return Response(status_code=204)


@router.post("/files/rename", status_code=204, openapi_extra=request_body(RenameBody))
async def rename(sandbox_id: str, request: Request,
                 principal: Principal = allowed("files:write", Bucket.REQUESTS, audit="file.rename")) -> Response:
    body = await json_body(request, RenameBody)
    describe(request, f"{body.src} -> {body.dst}")
    await services_of(request).files.rename(principal, sandbox_id, body.to_agent())
    return Response(status_code=204)
