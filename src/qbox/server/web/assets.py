"""The dashboard's static files, served under their content's hash.

Our own files (``static/``) and the front-end packages ``make setup`` copies
from the npm registry (``static/vendor/``: htmx, xterm.js) are read once at
start; each is served at ``/assets/<digest>/<name>`` with a year-long,
immutable cache header. A changed file gets a new URL, so a browser never
runs a stale script against a new page. Text files are also kept gzipped
(xterm.js shrinks from ~480 KB to ~120 KB) and sent so to browsers that accept it.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from qbox.core.errors import NotFoundError

STATIC = Path(__file__).parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    name: str
    digest: str
    body: bytes
    media_type: str
    gzipped: bytes | None = None

    @property
    def url(self) -> str:
        return f"/assets/{self.digest}/{self.name}"


def _media_type(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind.endswith("javascript") else kind


def _compressible(media_type: str, body: bytes) -> bool:
    return len(body) > 1024 and (media_type.startswith("text/") or "javascript" in media_type
                                 or media_type.startswith("image/svg"))


class Assets:
    """Every static file by its name (``app.js``, ``vendor/htmx.min.js``)."""

    def __init__(self, root: Path = STATIC) -> None:
        self._by_name: dict[str, Asset] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                body = path.read_bytes()
                name = path.relative_to(root).as_posix()
                media_type = _media_type(path)
                packed = gzip.compress(body, mtime=0) if _compressible(media_type, body) else None
                self._by_name[name] = Asset(name, hashlib.sha256(body).hexdigest()[:16], body,
                                            media_type, packed)

    def url(self, name: str) -> str:
        """The URL of a file; a missing one is a deployment error, said at once."""
        asset = self._by_name.get(name)
        if asset is None:
            raise LookupError(f"dashboard asset {name!r} is missing: run `make setup`")
        return asset.url

    def find(self, digest: str, name: str) -> Asset | None:
        asset = self._by_name.get(name)
        return asset if asset is not None and asset.digest == digest else None


ASSETS = Assets()
router = APIRouter(include_in_schema=False)


@router.get("/assets/{digest}/{name:path}")
async def asset(digest: str, name: str, request: Request) -> Response:
    found = ASSETS.find(digest, name)
    if found is None:
        raise NotFoundError(f"no such asset: {name}")
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if found.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(found.gzipped, media_type=found.media_type,
                        headers={**headers, "Content-Encoding": "gzip"})
    return Response(found.body, media_type=found.media_type, headers=headers)
