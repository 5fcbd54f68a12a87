"""Checking image references, store names and digests before any tool sees them.

Refs reach the agent from the control plane (a template's source image), so
they are untrusted text: they are only ever passed to skopeo as one argv
element, and they are checked here first so that a ref can never be read as
a command-line option, cannot pick a transport that reaches host services
(``docker-daemon:``, ``containers-storage:``), and cannot hide control
characters. Names and digests become path components of the store, so they
are held to strict patterns.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from qbox.core.errors import ValidationError

# Transports qbox imports from. Local ones name a path on the agent's host.
LOCAL_TRANSPORTS = frozenset({"oci", "oci-archive", "docker-archive"})
REGISTRY_TRANSPORT = "docker"
MAX_REF_LENGTH = 4096

# An OCI tag (the distribution spec's pattern), used as the image's name in the store.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")


def validate_ref(ref: str) -> str:
    """Return ``ref`` unchanged if qbox accepts it as a skopeo source, else raise."""
    if not isinstance(ref, str) or not ref:
        raise ValidationError("image ref must be a non-empty string")
    if len(ref) > MAX_REF_LENGTH:
        raise ValidationError("image ref is too long")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in ref):
        raise ValidationError("image ref contains control characters")
    transport, sep, rest = ref.partition(":")
    if not sep or not rest:
        raise ValidationError(
            f"image ref {ref!r} has no transport; use oci:, oci-archive:, docker-archive: or docker://"
        )
    if transport == REGISTRY_TRANSPORT:
        name = rest.removeprefix("//")
        if not rest.startswith("//") or not name or name.startswith(("-", "/")):
            raise ValidationError(f"image ref {ref!r} is not of the form docker://NAME[:TAG]")
        return ref
    if transport in LOCAL_TRANSPORTS:
        path = local_path(ref)
        if path is None or not path.is_absolute():
            raise ValidationError(f"image ref {ref!r} must name an absolute path")
        return ref
    raise ValidationError(
        f"image ref {ref!r} uses unsupported transport {transport!r}; use oci:, "
        "oci-archive:, docker-archive: or docker://"
    )


def local_path(ref: str) -> PurePosixPath | None:
    """The file or directory a local-transport ref reads, or None for other refs.

    skopeo splits these refs at the first colon after the transport, so a
    path can never contain one; what follows it is the tag or archive entry.
    """
    transport, _, rest = ref.partition(":")
    if transport not in LOCAL_TRANSPORTS:
        return None
    path = rest.split(":", 1)[0]
    return PurePosixPath(path) if path else None


def validate_name(name: str) -> str:
    """Return ``name`` if it is usable as the image's tag in the store, else raise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"image name {name!r} must be 1-128 characters of letters, digits, '_', '.' "
            "or '-', not starting with '.' or '-'"
        )
    return name


def digest_hex(digest: str) -> str:
    """The hex part of a ``sha256:…`` digest (safe as a path component), else raise."""
    match = _DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise ValidationError(f"image digest {digest!r} must look like sha256:<64 hex digits>")
    return match.group(1)
