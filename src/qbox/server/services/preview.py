"""Preview URLs: ``{port}-{sandbox}.{domain}``, how a Host header is read back into a sandbox
and a port, and the signatures of ``signed_url`` ports.

The name is one DNS label in front of the preview domain, so a wildcard certificate and a
wildcard DNS record cover every preview, and a browser keeps each (sandbox, port) its own
origin: one preview's scripts never share cookies or storage with another's or the dashboard's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from qbox.server.settings import ServerSettings

_LABEL_RE = re.compile(r"^([1-9][0-9]{0,4})-(sb_[0-9a-z]{8,40})$")
SIGNATURE_PARAM = "qbox_signature"
VISIBILITIES = ("public", "private", "signed_url")
HOST_HEADER_MODES = ("rewrite", "preserve")


@dataclass(frozen=True)
class PreviewDomain:
    scheme: str
    domain: str
    # None: the scheme's default port (left out of URLs).
    port: int | None

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> PreviewDomain:
        domain = settings.preview_domain.strip(".").lower()
        if settings.public_url:
            public = urlsplit(settings.public_url)
            return cls(public.scheme or "http", domain, public.port)
        scheme = "https" if settings.tls != "off" else "http"
        default = 443 if scheme == "https" else 80
        return cls(scheme, domain, None if settings.port == default else settings.port)

    def host(self, sandbox_id: str, port: int) -> str:
        return f"{port}-{sandbox_id}.{self.domain}"

    def url(self, sandbox_id: str, port: int, path: str = "/") -> str:
        authority = self.host(sandbox_id, port) + (f":{self.port}" if self.port else "")
        return f"{self.scheme}://{authority}{path}"

    def parse(self, host_header: str) -> tuple[str, int] | None:
        """(sandbox id, port) that a Host header names, or None when it is not a preview host
        of this domain. Exactly one label in front of the domain; any listener port."""
        host = host_header.strip().lower()
        if host.startswith("["):
            return None
        host = host.rsplit(":", 1)[0] if ":" in host else host
        host = host.rstrip(".")
        suffix = "." + self.domain
        if not host.endswith(suffix):
            return None
        match = _LABEL_RE.fullmatch(host[: -len(suffix)])
        if match is None:
            return None
        port = int(match.group(1))
        if not 1 <= port <= 65535:
            return None
        return match.group(2), port

    def is_preview_host(self, host_header: str) -> bool:
        """Whether a Host header is under the preview domain at all (a well-formed preview
        host or not): such requests never reach the API or the dashboard."""
        host = host_header.strip().lower()
        host = host.rsplit(":", 1)[0] if ":" in host and not host.startswith("[") else host
        return host.rstrip(".").endswith("." + self.domain)


def new_signing_key() -> str:
    return secrets.token_hex(32)


def _mac(key: str, sandbox_id: str, port: int, expires_at: int) -> str:
    message = f"{sandbox_id}:{port}:{expires_at}".encode()
    return hmac.new(bytes.fromhex(key), message, hashlib.sha256).hexdigest()


def sign(key: str, sandbox_id: str, port: int, expires_at: int) -> str:
    """The ``qbox_signature`` value of a signed URL valid until ``expires_at`` (epoch seconds)."""
    return f"{expires_at}.{_mac(key, sandbox_id, port, expires_at)}"


def signature_valid(key: str, sandbox_id: str, port: int, signature: str, now: float) -> bool:
    expires, _, mac = signature.partition(".")
    if not expires.isdigit() or len(expires) > 12 or int(expires) <= now:
        return False
    return hmac.compare_digest(mac, _mac(key, sandbox_id, port, int(expires)))


@dataclass(frozen=True)
class PreviewRoute:
    """What the preview proxy needs to know about one exposed port (services/ports.py)."""

    sandbox_id: str
    port: int
    owner_id: str
    # None until the sandbox is placed.
    host_id: str | None
    sandbox_status: str
    visibility: str
    host_header_mode: str
    # User ids or emails besides the owner (private ports).
    allowed_users: tuple[str, ...]
    signing_key: str
