"""Image references, store names, digests and registry logins, checked before any tool sees them.

Refs reach the agent from the control plane (a template's source image), so
they are untrusted text: they are only ever passed to skopeo as one argv
element, and they are checked here first so that a ref can never be read as
a command-line option, cannot pick a transport that reaches host services
(``docker-daemon:``, ``containers-storage:``), and cannot hide control
characters. Names and digests become path components of the store, so they
are held to strict patterns.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qbox.core.errors import ValidationError
from qbox.core.image_refs import DOCKER_HUB, LOCAL_TRANSPORTS, local_path, parse_ref

# The grammar and the pull policy live in core (the control plane checks refs too).
__all__ = ["DOCKER_HUB", "LOCAL_TRANSPORTS", "RegistryCredentials", "authfile", "digest_hex", "is_digest",
           "is_insecure_registry", "local_path", "normalize_ref", "parse_insecure_registries",
           "registry_host", "validate_name"]

# An OCI tag (the distribution spec's pattern), used as the image's name in the store.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")


def normalize_ref(ref: str) -> str:
    """The skopeo source for a user's image ref, or ValidationError (``core.image_refs.parse_ref``)."""
    return parse_ref(ref).source


def registry_host(source: str) -> str | None:
    """The registry (``host[:port]``) a normalised ``docker://`` source pulls from, else None."""
    if not source.startswith("docker://"):
        return None
    return parse_ref(source).registry


def is_insecure_registry(host: str, insecure: Iterable[str] = ()) -> bool:
    """Whether skopeo talks to ``host`` without TLS verification: loopback, or listed by the operator.

    A listed name without a port covers every port of that host.
    """
    listed = {entry.strip() for entry in insecure if entry.strip()}
    if host.startswith("["):  # [::1]:5000
        hostname = host[1:].partition("]")[0]
    else:
        hostname = host.partition(":")[0]
    if host in listed or hostname in listed or hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def parse_insecure_registries(text: str | None) -> frozenset[str]:
    """``QBOX_INSECURE_REGISTRIES`` (comma-separated ``host[:port]``) as a set."""
    return frozenset(part.strip() for part in (text or "").split(",") if part.strip())


def validate_name(name: str) -> str:
    """Return ``name`` if it is usable as the image's tag in the store, else raise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"image name {name!r} must be 1-128 characters of letters, digits, '_', '.' "
            "or '-', not starting with '.' or '-'"
        )
    return name


def is_digest(text: str) -> bool:
    """Whether ``text`` is a plain ``sha256:<64 hex>`` digest."""
    return _DIGEST_RE.fullmatch(text) is not None


def digest_hex(digest: str) -> str:
    """The hex part of a ``sha256:…`` digest (safe as a path component), else raise."""
    match = _DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise ValidationError(f"image digest {digest!r} must look like sha256:<64 hex digits>")
    return match.group(1)


@dataclass(frozen=True)
class RegistryCredentials:
    """A registry login for one pull. Never stored, logged or put in an error message."""

    username: str
    password: str = field(repr=False)

    def redact(self, text: str) -> str:
        """``text`` with the password (and its base64 auth form) blanked out."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _secrets(self) -> list[str]:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return [s for s in (token, self.password) if s]


@contextmanager
def authfile(credentials: RegistryCredentials | None, registry: str | None, tmp_dir: Path) -> Iterator[Path | None]:
    """A skopeo ``--authfile`` for ``registry`` in a private dir under ``tmp_dir``, removed on exit.

    The secret is on disk (0600, in a 0700 dir) for the length of the block
    only; it never reaches argv or the environment, where other users of the
    host could read it in /proc.
    """
    if credentials is None or registry is None:
        yield None
        return
    if not credentials.username or ":" in credentials.username:
        raise ValidationError("registry username must be non-empty and must not contain ':'")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="auth-", dir=tmp_dir))
    try:
        path = private / "auth.json"
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"auths": {registry: {"auth": token}}}, out)
        yield path
    finally:
        shutil.rmtree(private, ignore_errors=True)
