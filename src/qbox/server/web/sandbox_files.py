"""The Files tab of a sandbox's page: browse, view, download, upload, make directories, delete.

Every call goes through the files service that the API's file routes use
(``http/files.py``), with the viewer's principal: paths resolve inside the
sandbox exactly as there (relative ones from the user's home, ``..`` clamped
at the sandbox's root, symlinks kept inside it), and another member's sandbox
is the API's 404. An upload is one raw body per file (``files.js`` sends each
with XMLHttpRequest to show its progress), streamed to the sandbox's agent
under the same cap as the API's and never held whole; a download streams
back. Changes are audited under the API's actions for the same change.
"""

from __future__ import annotations

import codecs
import posixpath
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from qbox.core.errors import NotFoundError, ValidationError
from qbox.protocol.files import FileEntry, Mkdir
from qbox.server.agent_client import FileStream
from qbox.server.http.auditing import describe
from qbox.server.http.body import lift_body_limit
from qbox.server.http.files import declared_length
from qbox.server.http.deps import services_of
from qbox.server.services.files import FileWrite
from qbox.server.web.access import Change, Page, Viewer, form_fields
from qbox.server.web.render import is_htmx, render
from qbox.server.web.sandbox_common import TABS, sandbox_of

router = APIRouter(include_in_schema=False)

PREFIX = "/sandboxes/{sandbox_id}/files"
# How much of a file the view shows; the rest is a download away.
VIEW_BYTES = 64 * 1024
_PATH = Query(None, max_length=4096)
_NAME = Query(None, max_length=255)
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
_KINDS = {"-": "file", "l": "link"}


@dataclass(frozen=True)
class Row:
    """One entry of a directory as the listing shows it."""

    name: str
    path: str
    kind: str  # "directory", "file", "link" or "other" (a device, a pipe, a socket)
    size: int
    mode: str
    mtime: datetime | None


def _row(directory: str, entry: FileEntry) -> Row:
    kind = "directory" if entry.is_dir else _KINDS.get(entry.mode[:1], "other")
    return Row(entry.name, posixpath.join(directory, entry.name), kind, entry.size, entry.mode, entry.mtime)


def _url(sandbox_id: str, action: str, path: str | None = None, **query: str) -> str:
    """A URL of this tab: ``action`` "" is the listing; ``path`` and ``query`` go in its query."""
    params = {**({"path": path} if path is not None else {}), **query}
    return f"/sandboxes/{sandbox_id}/files{'/' + action if action else ''}" + (
        "?" + urlencode(params, safe="/", quote_via=quote) if params else "")


def _crumbs(sandbox_id: str, path: str) -> list[tuple[str, str]]:
    """``(label, listing URL)`` from the root down to ``path``'s directory or file."""
    crumbs = [("/", _url(sandbox_id, "", "/"))]
    parts = [part for part in path.split("/") if part]
    for depth, part in enumerate(parts, start=1):
        crumbs.append((part, _url(sandbox_id, "", "/" + "/".join(parts[:depth]))))
    return crumbs


def _child(directory: str | None, name: str | None) -> str:
    """The path of ``name`` in ``directory``: one plain name, never a way into another directory."""
    if not directory:
        raise ValidationError.for_fields({"path": "is required"})
    if not name or "/" in name or name in (".", ".."):
        raise ValidationError.for_fields({"name": "must be one file or directory name, without '/'"})
    return posixpath.join(directory, name)


def _attachment(path: str) -> str:
    """``Content-Disposition`` for a download: an ASCII name any browser takes, and the real one (RFC 6266)."""
    name = posixpath.basename(path.rstrip("/")) or "download"
    plain = _SAFE_FILENAME.sub("_", name).lstrip(".") or "download"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def _text(head: bytes, whole: bool) -> str | None:
    """``head`` as text, or None for a binary file (a NUL byte, or not UTF-8)."""
    if b"\0" in head:
        return None
    try:
        # Cut short, the last character may be cut in half: not a reason to call it binary.
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class Target:
    """A path as the sandbox resolves it, and whether the listing or the view shows it."""

    path: str
    is_dir: bool


async def _target(request: Request, viewer: Viewer, sandbox_id: str, path: str) -> Target:
    files = services_of(request).files
    found = await files.stat(viewer.principal, sandbox_id, path, None)
    if not found.exists:
        raise NotFoundError(f"{found.path}: no such file or directory")  # as the agent says it
    if not found.is_symlink:
        return Target(found.path, found.is_dir)
    # A link is listed like the directory it names (the agent keeps it inside the sandbox).
    pointed = posixpath.join(posixpath.dirname(found.path), found.symlink_target)
    target = await files.stat(viewer.principal, sandbox_id, pointed, None)
    return Target(found.path, target.is_dir)


async def _listing(request: Request, viewer: Viewer, sandbox_id: str, directory: str) -> dict[str, Any]:
    entries = await services_of(request).files.list(viewer.principal, sandbox_id, directory, None)
    rows = sorted((_row(directory, entry) for entry in entries), key=lambda r: (r.kind != "directory", r.name))
    return {"sandbox_id": sandbox_id, "directory": directory, "rows": rows, "url": _url,
            "listing_url": _url(sandbox_id, "", directory)}


def _tab(request: Request, viewer: Viewer, sandbox: dict[str, Any], **context: Any) -> Response:
    return render(request, "sandbox/files.html", viewer, sandbox=sandbox, tab="/files", tabs=TABS,
                  max_bytes=services_of(request).files.max_bytes, **context)


@router.get(PREFIX)
async def files_tab(sandbox_id: str, request: Request, path: str | None = _PATH,
                    viewer: Viewer = Depends(Page("files:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    if sandbox["status"] != "running":
        return _tab(request, viewer, sandbox, viewing=None, listing=None)
    target = await _target(request, viewer, sandbox_id, path or ".")
    if not target.is_dir:
        return RedirectResponse(_url(sandbox_id, "view", target.path), status_code=303)
    listing = await _listing(request, viewer, sandbox_id, target.path)
    if is_htmx(request):
        return render(request, "sandbox/_files_listing.html", viewer, **listing)
    return _tab(request, viewer, sandbox, viewing=None, listing=listing, **listing,
                crumbs=_crumbs(sandbox_id, target.path),
                upload_url=_url(sandbox_id, "upload", target.path),
                mkdir_url=_url(sandbox_id, "mkdir"))


async def _head(stream: FileStream) -> bytes:
    """The first ``VIEW_BYTES`` of a file; the rest is never read from the agent."""
    head = b""
    try:
        async for chunk in stream.chunks:
            head += chunk
            if len(head) >= VIEW_BYTES:
                break
    finally:
        if isinstance(stream.chunks, AsyncGenerator):
            await stream.chunks.aclose()
        await stream.close()
    return head[:VIEW_BYTES]


@router.get(PREFIX + "/view")
async def view_file(sandbox_id: str, request: Request, path: str | None = _PATH,
                    viewer: Viewer = Depends(Page("files:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    if sandbox["status"] != "running":
        return _tab(request, viewer, sandbox, viewing=None, listing=None)
    if not path:
        raise ValidationError.for_fields({"path": "is required"})
    target = await _target(request, viewer, sandbox_id, path)
    if target.is_dir:
        return RedirectResponse(_url(sandbox_id, "", target.path), status_code=303)
    stream = await services_of(request).files.read(viewer.principal, sandbox_id, target.path, None)
    head = await _head(stream)
    whole = stream.size <= VIEW_BYTES
    viewing = {"path": target.path, "size": stream.size, "text": _text(head, whole), "whole": whole,
               "shown": len(head), "download_url": _url(sandbox_id, "download", target.path),
               "directory_url": _url(sandbox_id, "", posixpath.dirname(target.path))}
    return _tab(request, viewer, sandbox, viewing=viewing, listing=None,
                crumbs=_crumbs(sandbox_id, target.path))


@router.get(PREFIX + "/download")
async def download(sandbox_id: str, request: Request, path: str | None = _PATH,
                   viewer: Viewer = Depends(Page("files:read"))) -> StreamingResponse:
    stream = await services_of(request).files.read(viewer.principal, sandbox_id, path, None)
    return StreamingResponse(stream.chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(stream.size), "Cache-Control": "no-store",
                                      "Content-Disposition": _attachment(path or "")})



@router.post(PREFIX + "/upload", status_code=204)
async def upload(sandbox_id: str, request: Request, path: str | None = _PATH, name: str | None = _NAME,
                 viewer: Viewer = Depends(Change("files:write", audit="file.write"))) -> Response:
    """One file's bytes as the raw body, into directory ``path`` under ``name`` (replacing a file there)."""
    await sandbox_of(request, viewer, sandbox_id)  # another's sandbox is a 404 before any 400
    target = _child(path, name)
    describe(request, f"write {target}")
    how = FileWrite(create_parents=False, length=declared_length(request))
    lift_body_limit(request)  # streamed: the files service holds it to QBOX_MAX_FILE_BYTES
    await services_of(request).files.write(viewer.principal, sandbox_id, target, request.stream(), how)
    return Response(status_code=204)


async def _changed(request: Request, viewer: Viewer, sandbox_id: str, directory: str) -> Response:
    """After a change: the directory's listing again (htmx swaps it in), or the page itself."""
    if is_htmx(request):
        listing = await _listing(request, viewer, sandbox_id, directory)
        return render(request, "sandbox/_files_listing.html", viewer, **listing)
    return RedirectResponse(_url(sandbox_id, "", directory), status_code=303)


@router.post(PREFIX + "/mkdir")
async def make_dir(sandbox_id: str, request: Request,
                   viewer: Viewer = Depends(Change("files:write", audit="file.mkdir"))) -> Response:
    fields = await form_fields(request)
    await sandbox_of(request, viewer, sandbox_id)
    directory = fields.get("path", "")
    target = _child(directory, fields.get("name", "").strip())
    describe(request, target)
    await services_of(request).files.mkdir(viewer.principal, sandbox_id, Mkdir(path=target, parents=False))
    return await _changed(request, viewer, sandbox_id, directory)


@router.post(PREFIX + "/delete")
async def delete(sandbox_id: str, request: Request,
                 viewer: Viewer = Depends(Change("files:write", audit="file.delete"))) -> Response:
    """A file, a link or an empty directory (a full one is refused: the listing shows what is in it)."""
    path = (await form_fields(request)).get("path", "")
    describe(request, path)
    await services_of(request).files.remove(viewer.principal, sandbox_id, path or None, False, None)
    return await _changed(request, viewer, sandbox_id, posixpath.dirname(path.rstrip("/")) or ".")
