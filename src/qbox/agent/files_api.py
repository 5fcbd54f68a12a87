"""The agent's file routes (docs/agent-protocol.md, "Files"): thin handlers over ``SandboxFiles``.

Filesystem calls block, and the sandbox user's filesystem ids are set per
thread, so every call runs in a worker thread. Contents stream both ways in
chunks: neither a 1 GB upload nor a 1 GB download is ever held in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import BinaryIO

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from qbox.agent.files import SandboxFiles, run_to_end
from qbox.agent.sandboxes import SandboxManager
from qbox.core.errors import QboxError, ValidationError
from qbox.protocol.files import FileEntry, FileStat, FileWritten, Mkdir, Rename

CHUNK_BYTES = 1024 * 1024


def parse_mode(text: str) -> int:
    """``644`` → 0o644: PUT's mode is an octal string without prefix (WIRE_PROTOCOL §4.4)."""
    digits = text[2:] if text[:2] in ("0o", "0O") else text
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ValidationError.for_fields({"mode": f"{text!r} is not an octal mode"}) from None
    if not 0 <= mode <= 0o7777:
        raise ValidationError.for_fields({"mode": f"{text!r} is out of range"})
    return mode


def _manager(request: Request) -> SandboxManager:
    manager: SandboxManager = request.app.state.agent.sandboxes
    return manager


async def _files(request: Request, sandbox_id: str, user: str | None) -> SandboxFiles:
    # Reads the sandbox's /etc/passwd: small, but still a file read.
    return await asyncio.to_thread(_manager(request).files, sandbox_id, user)


async def _chunks(handle: BinaryIO, size: int) -> AsyncIterator[bytes]:
    """At most ``size`` bytes: the Content-Length promised when the file was opened."""
    left = size
    try:
        while left > 0:
            # To its end: the handle is closed below, never under a thread still reading it.
            chunk = await run_to_end(handle.read, min(CHUNK_BYTES, left))
            if not chunk:
                return  # shrank while we read: the client sees a short body
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()


def files_router() -> APIRouter:
    router = APIRouter(prefix="/sandboxes/{sandbox_id}/files")

    @router.get("/stat")
    async def stat(sandbox_id: str, request: Request, path: str = Query(...),
                   user: str | None = None) -> FileStat:
        files = await _files(request, sandbox_id, user)
        return FileStat.model_validate(await asyncio.to_thread(files.stat, path))

    @router.get("/list")
    async def list_dir(sandbox_id: str, request: Request, path: str = Query(...),
                       user: str | None = None) -> list[FileEntry]:
        files = await _files(request, sandbox_id, user)
        return [FileEntry.model_validate(entry)
                for entry in await asyncio.to_thread(files.list, path)]

    @router.get("/content")
    async def read(sandbox_id: str, request: Request, path: str = Query(...),
                   user: str | None = None) -> StreamingResponse:
        files = await _files(request, sandbox_id, user)
        handle, size = await run_to_end(files.open_read, path)
        return StreamingResponse(_chunks(handle, size), media_type="application/octet-stream",
                                 headers={"Content-Length": str(size)})

    @router.put("/content")
    async def write(sandbox_id: str, request: Request, path: str = Query(...),
                    mode: str = "644", create_parents: bool = Query(True, alias="createParents"),
                    append: bool = False, user: str | None = None,
                    max_bytes: int | None = Query(None, alias="maxBytes", ge=0)) -> FileWritten:
        body = request.stream()
        try:
            permissions = parse_mode(mode)
            files = await _files(request, sandbox_id, user)
            operation = files.append if append else files.write
            return FileWritten.model_validate(await operation(
                path, body, mode=permissions, create_parents=create_parents,
                max_bytes=max_bytes))
        except QboxError:
            # Read the rest before answering: a client still sending would
            # otherwise see a broken pipe instead of this error.
            async for _ in body:
                pass
            raise

    @router.delete("/content", status_code=204)
    async def remove(sandbox_id: str, request: Request, path: str = Query(...),
                     recursive: bool = False, user: str | None = None) -> Response:
        files = await _files(request, sandbox_id, user)
        await asyncio.to_thread(files.remove, path, recursive=recursive)
        return Response(status_code=204)

    @router.post("/mkdir", status_code=204)
    async def mkdir(sandbox_id: str, body: Mkdir, request: Request) -> Response:
        files = await _files(request, sandbox_id, body.user)
        await asyncio.to_thread(files.mkdir, body.path, mode=body.mode, parents=body.parents)
        return Response(status_code=204)

    @router.post("/rename", status_code=204)
    async def rename(sandbox_id: str, body: Rename, request: Request) -> Response:
        files = await _files(request, sandbox_id, body.user)
        await asyncio.to_thread(files.rename, body.src, body.dst)
        return Response(status_code=204)

    return router
