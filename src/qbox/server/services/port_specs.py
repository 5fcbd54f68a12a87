"""What may be exposed, and how: the rules of an exposed port, checked alike whether the port
comes with a spawn or later (``services/ports.py``).

A port is 1..65535; under 1024 it needs ``force``. qbox itself listens on no port inside a
sandbox (the kernel host talks over its stdin/stdout and its kernels over unix sockets;
shells run through the runtime, there is no sshd), so that is the only reservation: every
other port is the sandbox's own. ``allowedUsers`` (user ids or emails) go only with
``private``; a signed URL's lifetime is 1 s .. ``QBOX_SIGNED_URL_MAX_TTL_SECONDS``.

A ``signed_url`` port's URLs are signed with the port's own key (``preview.sign``); minting a
new URL draws a new key, so every URL minted before stops working: that is how one is revoked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from qbox.core.errors import (
    PortAlreadyExposedError,
    PortCountLimitError,
    PortInvalidError,
    PortReservedError,
    SignedUrlTtlInvalidError,
    ValidationError,
)
from qbox.core.ids import USER_ID_RE
from qbox.server.db.tables import SandboxPort
from qbox.server.services.preview import HOST_HEADER_MODES, VISIBILITIES, new_signing_key
from qbox.server.settings import ServerSettings

PRIVILEGED_BELOW = 1024
MAX_ALLOWED_USERS = 64
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


@dataclass(frozen=True)
class PortSpec:
    """A port to expose: ``POST …/ports`` or one of a spawn's ``ports``."""

    port: int
    visibility: str = "public"
    host_header_mode: str = "rewrite"
    allowed_users: tuple[str, ...] | None = None
    signed_url_ttl_seconds: int | None = None
    force: bool = False


@dataclass(frozen=True)
class PortChange:
    """A PATCH: what is None stays as it is."""

    visibility: str | None = None
    allowed_users: tuple[str, ...] | None = None
    host_header_mode: str | None = None


def check_port_number(port: int) -> int:
    if not 1 <= port <= 65535:
        raise PortInvalidError(f"port {port} is outside 1..65535", details={"port": port})
    return port


def check_spec(spec: PortSpec, settings: ServerSettings) -> PortSpec:
    """The spec with its allowed users normalised, or the error that refuses it."""
    check_port_number(spec.port)
    if spec.port < PRIVILEGED_BELOW and not spec.force:
        raise PortReservedError(f"port {spec.port} is privileged (under {PRIVILEGED_BELOW}): "
                                "pass force to expose it", details={"port": spec.port})
    _check_choices(spec.visibility, spec.host_header_mode)
    if spec.signed_url_ttl_seconds is not None:
        if spec.visibility != "signed_url":
            raise ValidationError.for_fields({"signedUrlTtlSeconds": "goes only with visibility signed_url"})
        check_ttl(spec.signed_url_ttl_seconds, settings)
    users = allowed_users(spec.allowed_users, spec.visibility)
    return PortSpec(spec.port, spec.visibility, spec.host_header_mode, users, spec.signed_url_ttl_seconds,
                    spec.force)


def check_specs(specs: Sequence[PortSpec], settings: ServerSettings) -> list[PortSpec]:
    """A spawn's ports: each checked, none twice, no more than a sandbox may have."""
    checked = [check_spec(spec, settings) for spec in specs]
    seen: set[int] = set()
    for spec in checked:
        if spec.port in seen:
            raise PortAlreadyExposedError(f"port {spec.port} is given twice", details={"port": spec.port})
        seen.add(spec.port)
    check_count(len(checked), settings)
    return checked


def check_count(count: int, settings: ServerSettings) -> None:
    limit = settings.max_ports_per_sandbox
    if count > limit:
        raise PortCountLimitError(f"a sandbox may expose at most {limit} ports",
                                  details={"limit": limit, "requested": count})


def check_ttl(seconds: int, settings: ServerSettings) -> int:
    limit = settings.signed_url_max_ttl_seconds
    if not 1 <= seconds <= limit:
        raise SignedUrlTtlInvalidError(f"a signed URL lives 1..{limit} seconds, not {seconds}",
                                       details={"ttlSeconds": seconds, "maxTtlSeconds": limit})
    return seconds


def _check_choices(visibility: str | None, host_header_mode: str | None) -> None:
    if visibility is not None and visibility not in VISIBILITIES:
        raise ValidationError.for_fields({"visibility": f"must be one of {', '.join(VISIBILITIES)}"})
    if host_header_mode is not None and host_header_mode not in HOST_HEADER_MODES:
        raise ValidationError.for_fields({"hostHeaderMode": f"must be one of {', '.join(HOST_HEADER_MODES)}"})


def allowed_users(users: Sequence[str] | None, visibility: str) -> tuple[str, ...] | None:
    """User ids and emails (lower case), each once, in the order given; only for private ports."""
    if users is None:
        return None
    if visibility != "private":
        raise ValidationError.for_fields({"allowedUsers": "goes only with visibility private"})
    if len(users) > MAX_ALLOWED_USERS:
        raise ValidationError.for_fields({"allowedUsers": f"at most {MAX_ALLOWED_USERS} users"})
    found: list[str] = []
    for user in users:
        if USER_ID_RE.fullmatch(user):
            name = user
        elif _EMAIL_RE.fullmatch(user):
            name = user.lower()
        else:
            raise ValidationError.for_fields({"allowedUsers": "each is a user id (usr_…) or an email address"})
        if name not in found:
            found.append(name)
    return tuple(found)


def new_row(sandbox_id: str, spec: PortSpec, settings: ServerSettings, now: datetime) -> SandboxPort:
    """The row of a checked spec; a signed_url port gets its first URL's expiry."""
    row = SandboxPort(sandbox_id=sandbox_id, port=spec.port, visibility=spec.visibility,
                      host_header_mode=spec.host_header_mode, allowed_users=list(spec.allowed_users or ()),
                      signing_key=new_signing_key(), signed_url_ttl_seconds=spec.signed_url_ttl_seconds,
                      signed_url_expires_at=None, created_at=now, updated_at=now)
    if spec.visibility == "signed_url":
        rotate(row, spec.signed_url_ttl_seconds, settings, now)
    return row


def rotate(row: SandboxPort, ttl: int | None, settings: ServerSettings, now: datetime) -> None:
    """A new signing key (every older URL stops working) and, for a signed_url port, a new
    expiry ``ttl`` seconds (else the port's last, else the default) from ``now``."""
    row.signing_key = new_signing_key()
    if row.visibility != "signed_url":
        row.signed_url_expires_at = None
        return
    if ttl is not None:
        row.signed_url_ttl_seconds = check_ttl(ttl, settings)
    lifetime = row.signed_url_ttl_seconds or settings.signed_url_default_ttl_seconds
    # Whole seconds: the signature carries the expiry as epoch seconds.
    row.signed_url_expires_at = datetime.fromtimestamp(int(now.timestamp()) + lifetime, UTC)
    row.updated_at = now


def apply_change(row: SandboxPort, change: PortChange, settings: ServerSettings, now: datetime) -> None:
    """A PATCH on the row: allowed users only for a private port (kept while it stays private),
    a new signed URL when it becomes signed_url, a new key when it stops being one."""
    _check_choices(change.visibility, change.host_header_mode)
    before = row.visibility
    after = change.visibility or before
    users = allowed_users(change.allowed_users, after)
    if after != "private":
        row.allowed_users = []
    elif users is not None:
        row.allowed_users = list(users)
    elif before != "private":
        row.allowed_users = []
    row.visibility = after
    if change.host_header_mode is not None:
        row.host_header_mode = change.host_header_mode
    if (after == "signed_url") != (before == "signed_url"):
        rotate(row, None, settings, now)
    row.updated_at = now
