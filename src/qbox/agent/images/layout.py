"""Reading (and re-tagging) the store's OCI image layout: index, tags, manifests, blobs.

skopeo and umoci write the layout; qbox reads it to resolve names to
digests, and edits ``index.json`` itself only to add or drop tags (always
under the store's lock, with an atomic replace).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qbox.agent.images.refs import digest_hex
from qbox.core.errors import InternalError, NotFoundError

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


class OciLayout:
    def __init__(self, path: Path) -> None:
        self.path = path

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest_hex(digest)

    def blob_hexes(self) -> set[str]:
        blobs = self.path / "blobs" / "sha256"
        return set(os.listdir(blobs)) if blobs.is_dir() else set()

    def manifest(self, digest: str) -> dict[str, Any]:
        path = self.blob_path(digest)
        if not path.is_file():
            raise NotFoundError(f"image {digest} is not in this host's store")
        manifest = read_json(path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
            raise NotFoundError(f"{digest} is not an image manifest")
        return manifest

    def config(self, digest: str) -> dict[str, Any]:
        """The image config blob of manifest ``digest``."""
        manifest = self.manifest(digest)
        blob = read_json(self.blob_path(str(manifest.get("config", {}).get("digest", ""))))
        return blob if isinstance(blob, dict) else {}

    def index(self) -> dict[str, Any]:
        path = self.path / "index.json"
        index = read_json(path) if path.exists() else {"schemaVersion": 2, "manifests": []}
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise InternalError(f"damaged OCI index {path}")
        return index

    def write_index(self, index: dict[str, Any]) -> None:
        write_json(self.path / "index.json", index)

    def tags(self) -> dict[str, str]:
        """Tag → manifest digest."""
        out = {}
        for entry in self.index()["manifests"]:
            tag = (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION)
            if tag:
                out[str(tag)] = str(entry.get("digest", ""))
        return out

    def tag(self, tag: str, digest: str) -> None:
        """Point ``tag`` at manifest ``digest`` (which must be in the layout)."""
        path = self.blob_path(digest)
        if not path.is_file():
            raise NotFoundError(f"image {digest} is not in this host's store")
        index = self.index()
        index["manifests"] = [
            e for e in index["manifests"] if (e.get("annotations") or {}).get(REF_NAME_ANNOTATION) != tag
        ]
        index["manifests"].append({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest,
                                   "size": path.stat().st_size, "annotations": {REF_NAME_ANNOTATION: tag}})
        self.write_index(index)

    def tag_of(self, digest: str) -> str:
        """A tag pointing at ``digest`` (the first by name), for tools that only take tags."""
        digest_hex(digest)
        for tag, tagged in sorted(self.tags().items()):
            if tagged == digest:
                return tag
        raise NotFoundError(f"image {digest} is not in this host's store")

    def digest_of(self, name: str) -> str:
        """The manifest digest the index holds for ``name`` (just written by a tool)."""
        for entry in reversed(self.index()["manifests"]):
            annotations = entry.get("annotations") or {}
            if annotations.get(REF_NAME_ANNOTATION) != name:
                continue
            if entry.get("mediaType") != MANIFEST_MEDIA_TYPE:
                raise InternalError(f"image {name} was stored as {entry.get('mediaType')}, not an image manifest")
            digest = str(entry.get("digest", ""))
            digest_hex(digest)  # refuse anything that is not a plain sha256 digest
            return digest
        raise InternalError(f"the store has no image named {name} after writing it")


def read_json(path: Path) -> Any:
    # Callers check the files they expect a user to ask about; anything missing
    # or unreadable here means a damaged store, not a wrong request.
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InternalError(f"cannot read {path}: {exc}") from exc


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: readers see the old or the new file, never a part."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(value))
    os.replace(staging, path)
